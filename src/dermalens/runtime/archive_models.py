"""What the archive job's actors load (see `runtime.archive`): the scope gate and the bundles
it routes to (the `Router` of `dermalens predict`), or one bundle without the gate, as
files sent through Ray's object store; the content key of the results folder; and the
`Router` each actor builds from those files.

    models = archive_models(model=None, gate=True)   # what `dermalens predict` would load
    models.key                                        # OUT/bundle=<models.key[:16]>
    router = models_router(models.files, models.layout, threads=1)   # in an actor
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, default_model_path, load_bundle
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.router import BUNDLED, Router, check_fitted, installed_folders
from dermalens.runtime.scene import SCENE_ONNX
from dermalens.runtime.scope import GATE_JSON, GATE_NPZ, load_gate

PINNED = "pinned"  # the folder a pinned bundle from elsewhere is written to in an actor


@dataclass
class ArchiveModels:
    """The files the actors load, and what they are."""

    files: dict[str, bytes]  # relative path -> content
    key: str  # SHA-256 over every file: the results folder's name
    # how an actor lays them out: {"gate": bool, "pin": folder of the pinned bundle or None}
    layout: dict
    version: str  # the model an error row names: the pinned one, else the gate's feature model
    gate: str | None = None  # the gate's version ("scope-gate@<sha>"), None without it
    routes: dict[str, str] = field(default_factory=dict)  # image kind -> model version


def bundle_files(bundle: Bundle, prefix: str = "") -> dict[str, bytes]:
    """Every file of the bundle folder the actors need, by relative path (under `prefix`):
    all but the PyTorch weights (the actors run ONNX Runtime). Sent to each actor through
    Ray's object store, so cluster nodes need no copy of the bundle."""
    if not bundle.is_ensemble and not bundle.has(ONNX):
        raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}`")
    files = sorted(p for p in bundle.path.rglob("*") if p.is_file() and p.name != WEIGHTS)
    return {prefix + p.relative_to(bundle.path).as_posix(): p.read_bytes() for p in files}


def bundle_key(files: dict[str, bytes]) -> str:
    """SHA-256 over every file's path and content: a change to the weights, calibration,
    thresholds, OOD check or scope gate gives a new key, and so a new results folder."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def archive_models(
    model: str | Path | None = None, gate: bool = True, root: Path = BUNDLED
) -> ArchiveModels:
    """What `dermalens predict` uses: the gate under `root` and the bundles it routes to,
    `model` (or $DERMALENS_MODEL) pinned; `gate=False` (or no installed gate): `model`
    alone answers every image, its key the bundle's own (as before the gate)."""
    pin = model or os.environ.get("DERMALENS_MODEL") or None
    found = load_gate(root / "gate") if gate else None
    if found is None:
        bundle = load_bundle(pin or default_model_path())
        files = bundle_files(bundle)
        layout = {"gate": False, "pin": "."}
        return ArchiveModels(files, bundle_key(files), layout, bundle.version)
    names = (GATE_JSON, GATE_NPZ, SCENE_ONNX)
    files = {f"gate/{name}": (root / "gate" / name).read_bytes() for name in names}
    bundles = {}
    for name, folder in installed_folders(found, root).items():
        bundles[name] = load_bundle(folder)
        files.update(bundle_files(bundles[name], f"{name}/"))
    feature = bundles[found.feature_model]
    check_fitted(found, feature)
    pinned = None
    if pin is not None:
        where = Path(pin).resolve()
        pinned = next((n for n, b in bundles.items() if b.path.resolve() == where), None)
        if pinned is None:
            bundles[PINNED] = load_bundle(pin)
            files.update(bundle_files(bundles[PINNED], f"{PINNED}/"))
            pinned = PINNED
    routes = {k: bundles[n].version for k, n in found.routes.items() if n in bundles}
    return ArchiveModels(
        files,
        bundle_key(files),
        {"gate": True, "pin": pinned},
        bundles[pinned].version if pinned else feature.version,
        f"scope-gate@{str(found.info.get('gate_sha256', ''))[:12]}",
        routes,
    )


def models_router(files: dict[str, bytes], layout: dict, threads: int) -> Router:
    """The `Router` of `archive_models`' files, written to a temporary folder, loaded (one
    ONNX Runtime session per model, `threads` each) and removed again."""
    folder = Path(tempfile.mkdtemp(prefix="dermalens-models-"))
    options = {"backend": "onnx", "threads": threads, "precision": "fp32", "spinning": False}
    try:
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        # the hashes in bundle.json and gate.json are checked again here: a damaged copy fails
        pin = folder / layout["pin"] if layout["pin"] else None
        if not layout["gate"]:
            predictor = Predictor(pin, **options)
            return Router(predictor, {}, None, predictor)
        return Router.installed(pin=pin, root=folder, **options)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # everything is in memory now
