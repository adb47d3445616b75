"""The self-describing model bundle: a folder with `bundle.json`, `model.pt` and/or `model.onnx`.

`bundle.json` holds everything downstream needs: class codes in index order with display
names and malignancy (read back from its "classes" entries, so a class the folder loader
made up at training time keeps its name and flag), preprocessing, metadata fields,
temperature and thresholds, the training config, metrics, library versions and SHA-256
hashes of the weight files. Nothing downstream hard-codes a class list or a normalisation
constant.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dermalens import __version__
from dermalens.files import atomic_write_text, sha256
from dermalens.preprocess import Preprocessing
from dermalens.taxonomy import CLASSES, LesionClass, display_name, is_malignant

FORMAT_VERSION = 1


DESCRIPTION = "bundle.json"


WEIGHTS = "model.pt"


ONNX = "model.onnx"


def default_model_path() -> Path:
    """The bundled default model, or the folder named by $DERMALENS_MODEL."""
    return Path(os.environ.get("DERMALENS_MODEL") or Path(__file__).parent / "bundled" / "default")


class BundleError(ValueError):
    """A bundle that cannot be used; the message says what is wrong."""


def versions() -> dict[str, str]:
    out = {"dermalens": __version__, "python": platform.python_version()}
    for name in ("torch", "timm", "onnx", "onnxruntime", "numpy", "PIL"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return out


@dataclass
class Bundle:
    """The parsed description of a model bundle folder."""

    path: Path
    name: str
    classes: list[str]
    preprocessing: Preprocessing
    arch: dict[str, Any]
    metadata_fields: list[str] = field(default_factory=list)
    temperature: float = 1.0
    # probabilities = softmax(logits / temperature + class_bias): calibrated to the data;
    # the answer = argmax(log probabilities + decision_bias): see `Predictor.decide`
    class_bias: list[float] = field(default_factory=list)  # empty: zeros
    decision_bias: list[float] = field(default_factory=list)  # empty: zeros
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # versions, hashes, card, created...
    # code -> name and malignant flag (None: unknown) as bundle.json's "classes" give them;
    # a code missing here (a bundle built in code) falls back to the taxonomy
    class_info: dict[str, LesionClass] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return (
            f"{self.name}@"
            + self.info.get(
                "weights_sha256",
                self.info.get("onnx_sha256", self.info.get("members_sha256", "")),
            )[:12]
        )

    @property
    def is_ensemble(self) -> bool:
        """Several member networks (see `runtime.ensemble`), not one."""
        return bool(self.info.get("members"))

    @property
    def display_names(self) -> list[str]:
        return [
            self.class_info[c].name if c in self.class_info else display_name(c)
            for c in self.classes
        ]

    @property
    def malignant(self) -> list[bool | None]:
        """Each class's flag: True, False, or None (unknown: no triage from this model)."""
        return [self._malignant(c) for c in self.classes]

    def _malignant(self, code: str) -> bool | None:
        # the taxonomy's non-lesion groups (rashes, infections) are None even where an older
        # bundle.json says False: a rash must never get a benign / malignant triage
        if code in CLASSES and CLASSES[code].malignant is None:
            return None
        if code in self.class_info:
            return self.class_info[code].malignant
        return is_malignant(code)

    @property
    def unknown_malignancy(self) -> list[str]:
        """Codes of the classes whose malignancy is unknown; any makes triage unavailable."""
        return [c for c, m in zip(self.classes, self.malignant) if m is None]

    def file(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def description(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "classes": [
                {"index": i, "code": c, "name": name, "malignant": flag}
                for i, (c, name, flag) in enumerate(
                    zip(self.classes, self.display_names, self.malignant)
                )
            ],
            "preprocessing": self.preprocessing.to_dict(),
            "arch": self.arch,
            "metadata_fields": self.metadata_fields,
            "temperature": self.temperature,
            "class_bias": self.class_bias,
            "decision_bias": self.decision_bias,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "train_config": self.train_config,
            **self.info,
        }

    def save_description(self) -> None:
        self.info["versions"] = self.info.get("versions") or versions()
        for key, name in (("weights_sha256", WEIGHTS), ("onnx_sha256", ONNX)):
            if self.has(name):
                self.info[key] = sha256(self.file(name))
        atomic_write_text(self.file(DESCRIPTION), json.dumps(self.description(), indent=2))


def parse(data: dict[str, Any], path: Path) -> Bundle:
    where = path / DESCRIPTION
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{where}: bundle format version {version!r} is not understood by dermalens "
            f"{__version__} (expects {FORMAT_VERSION})"
        )
    for key in ("name", "classes", "preprocessing", "arch"):
        if key not in data:
            raise BundleError(f"{where}: missing required field {key!r}")
    entries = sorted(data["classes"], key=lambda c: c["index"])
    classes = [c["code"] for c in entries]
    if not classes or len(set(classes)) != len(classes):
        raise BundleError(f"{where}: class list is empty or has duplicates: {classes}")
    known = {
        "format_version",
        "name",
        "classes",
        "preprocessing",
        "arch",
        "metadata_fields",
        "temperature",
        "class_bias",
        "decision_bias",
        "thresholds",
        "metrics",
        "train_config",
    }
    return Bundle(
        path=path,
        name=data["name"],
        classes=classes,
        preprocessing=Preprocessing.from_dict(data["preprocessing"]),
        arch=data["arch"],
        metadata_fields=list(data.get("metadata_fields", [])),
        temperature=float(data.get("temperature", 1.0)),
        class_bias=_bias(data, "class_bias", len(classes), where),
        decision_bias=_bias(data, "decision_bias", len(classes), where),
        thresholds=dict(data.get("thresholds", {})),
        metrics=dict(data.get("metrics", {})),
        train_config=dict(data.get("train_config", {})),
        info={k: v for k, v in data.items() if k not in known},
        class_info=_class_info(entries, where),
    )


def _class_info(entries: list[dict[str, Any]], where: Path) -> dict[str, LesionClass]:
    """The names and flags the "classes" entries give; a missing one is the taxonomy's."""
    info = {}
    for entry in entries:
        code = entry["code"]
        if "name" not in entry and "malignant" not in entry:
            continue
        name = entry.get("name", display_name(code))
        flag = entry["malignant"] if "malignant" in entry else is_malignant(code)
        if not isinstance(name, str) or not name.strip():
            raise BundleError(f"{where}: class {code!r}: name must be a non-empty string")
        if flag is not None and not isinstance(flag, bool):
            raise BundleError(
                f"{where}: class {code!r}: malignant must be true, false or null (unknown), "
                f"got {flag!r}"
            )
        info[code] = LesionClass(code, name, flag)
    return info


def _bias(data: dict[str, Any], key: str, n: int, where: Path) -> list[float]:
    values = data.get(key) or []
    if values and len(values) != n:
        raise BundleError(f"{where}: {key} has {len(values)} values for {n} classes")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: {key} must be numbers ({exc})") from exc


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle folder (or its bundle.json / model file)."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    where = path / DESCRIPTION
    if not where.is_file():
        raise BundleError(f"{path}: not a model bundle (no {DESCRIPTION})")
    try:
        data = json.loads(where.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from exc
    bundle = parse(data, path)
    if bundle.is_ensemble:
        if verify:
            load_ensemble_members(bundle)
        return bundle
    if not bundle.has(WEIGHTS) and not bundle.has(ONNX):
        raise BundleError(f"{path}: bundle has neither {WEIGHTS} nor {ONNX}")
    if verify:
        for key, name in (("weights_sha256", WEIGHTS), ("onnx_sha256", ONNX)):
            if (
                bundle.has(name)
                and key in bundle.info
                and sha256(bundle.file(name)) != bundle.info[key]
            ):
                raise BundleError(
                    f"{bundle.file(name)}: content hash does not match {DESCRIPTION}; "
                    f"the file was changed or corrupted"
                )
    return bundle


def check_compatible(members: list[Bundle]) -> None:
    """Raise BundleError unless `members` can be averaged: at least two, the same classes,
    preprocessing and metadata fields, none itself an ensemble."""
    if len(members) < 2:
        raise BundleError(f"an ensemble needs at least 2 member bundles, got {len(members)}")
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise BundleError(
                f"{m.path}: classes {m.classes} differ from {first.path}'s {first.classes}"
            )
        if m.preprocessing.to_dict() != first.preprocessing.to_dict():
            raise BundleError(
                f"{m.path}: preprocessing {m.preprocessing.to_dict()} differs from "
                f"{first.path}'s {first.preprocessing.to_dict()}; members share one input"
            )
        if m.display_names != first.display_names or m.malignant != first.malignant:
            raise BundleError(
                f"{m.path}: class names {m.display_names} or malignant flags {m.malignant} "
                f"differ from {first.path}'s {first.display_names}, {first.malignant}"
            )
        if m.metadata_fields != first.metadata_fields:
            raise BundleError(
                f"{m.path}: metadata fields {m.metadata_fields} differ from "
                f"{first.path}'s {first.metadata_fields}"
            )
        if m.info.get("members"):
            raise BundleError(f"{m.path}: is itself an ensemble; give its members instead")


def load_ensemble_members(bundle: Bundle, verify: bool = True) -> list[Bundle]:
    """The member bundles of an ensemble bundle, loaded (and hash-checked with `verify`)."""
    paths = bundle.info.get("members") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BundleError(f"{bundle.path}: 'members' must be a list of folder names")
    members = []
    for rel in paths:
        folder = (bundle.path / rel).resolve()
        if bundle.path.resolve() not in folder.parents:
            raise BundleError(f"{bundle.path}: member {rel!r} lies outside the bundle")
        if not folder.is_dir():
            raise BundleError(f"{bundle.path}: member {rel!r} is missing")
        members.append(load_bundle(folder, verify))
    check_compatible(members)
    if members[0].classes != bundle.classes:
        raise BundleError(f"{bundle.path}: its classes differ from its members'")
    return members
