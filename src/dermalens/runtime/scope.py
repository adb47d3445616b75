"""The scope gate: what kind of image is this, and which installed model (if any) is made for it.

    gate = load_gate()  # src/dermalens/bundled/gate, or None when absent
    scene = gate.scene_features(batch)  # the scene model on the same batch
    decisions = gate.decide(pooled(fmap), pixel_stats(batch, pre), thumbnails(batch, pre), scene)

Before any classifier answers, each image is put in one of four kinds:

- `dermoscopic`: a dermoscopic close-up of a lesion (the default model's kind);
- `clinical`: a clinical (camera or phone) close-up of a lesion (the clinical model's kind);
- `other_skin`: a clinical photo of skin that is not a lesion close-up like those the
  models learnt (a rash, a body area, a nail, hair): out of scope;
- `not_skin`: a flat frame, pixel noise, a greyscale frame, or colours unlike any skin.

It reads the pooled features of the gate's feature model (the default bundle, whose forward
pass the dermoscopic answer needs anyway), those of the scene model (`runtime.scene`: an
untuned ImageNet backbone, which keeps rashes and body areas apart from lesion close-ups
where the HAM10000-tuned features map them onto lesions) and image statistics
(`scope_stats`: dark corners and the round field of dermoscopy, uniform illumination,
saturation). Outlier scores are the cosine distance to the k-th nearest training lesion over
its median: the dermoscopic score against HAM10000 training images, the lesion score against
PAD-UFES-20 (clinical) ones, each in both feature spaces. An image is like a kind when both
of that kind's scores are within their thresholds; like one kind, it is that kind; like
both, a logistic regression fitted on HAM10000 against PAD-UFES-20 training images decides;
like neither, it is `other_skin`: with no licensed images of rashes, nails or hair, only
"unlike every lesion close-up in training", never a class learnt from examples. Colours
unlike both sets mean `not_skin`. Every threshold is a quantile of validation scores
(`evaluation.scope_fit`); each model's own OOD check still runs after the gate
(`runtime.router`).

The fit lives in `gate.npz` beside `gate.json` and `scene.onnx` (thresholds, the hashes of
the npz, of the scene model and of the feature model's weights, which model answers which
kind, and the fit's report).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from dermalens.bundle import BundleError
from dermalens.files import sha256
from dermalens.preprocess import Preprocessing
from dermalens.runtime.ood import (
    MIN_COLOUR,
    MIN_NEIGHBOUR_CORR,
    MIN_PIXEL_STD,
    knn_distance,
    unit_rows,
)
from dermalens.runtime.scene import SCENE_ONNX, SceneModel

GATE_DIR = Path(__file__).resolve().parents[1] / "bundled" / "gate"
GATE_JSON, GATE_NPZ = "gate.json", "gate.npz"
FORMAT = 2  # 2: the scene model's scores
KINDS = ("dermoscopic", "clinical", "other_skin", "not_skin")
LESION_KINDS = ("dermoscopic", "clinical")
THUMB = (30, 40)  # rows x columns of the thumbnail the gate's image statistics read
STATS = 12  # columns of `scope_stats`

# what each kind is, in plain words (the page and CLI sentences start from these)
KIND_WORDS = {
    "dermoscopic": "a dermoscopic close-up of a skin lesion",
    "clinical": "a camera or phone close-up of a skin lesion",
    "other_skin": (
        "a photo of skin that is not a close-up of a single lesion (for example a rash, a "
        "wider body area, a nail or hair)"
    ),
    "not_skin": "not a photo of skin",
}
COVERS = {  # what a model for each lesion kind covers, in plain words
    "dermoscopic": "dermoscopic close-ups of skin lesions",
    "clinical": "camera or phone close-ups of skin lesions",
}


def thumbnails(batch: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Preprocessed N x 3 x H x W -> N x 30 x 40 x 3 uint8: block means of the model input
    in 0-255 units (what `scope_stats` reads; small enough to cache for fitting)."""
    std = np.asarray(pre.std, np.float32)[None, :, None, None]
    mean = np.asarray(pre.mean, np.float32)[None, :, None, None]
    rgb = np.clip(np.asarray(batch, np.float32) * std + mean, 0, 255)
    rows = np.linspace(0, rgb.shape[2], THUMB[0] + 1).astype(int)[:-1]
    cols = np.linspace(0, rgb.shape[3], THUMB[1] + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(rgb, rows, axis=2), cols, axis=3)
    counts = np.outer(
        np.diff(np.append(rows, rgb.shape[2])), np.diff(np.append(cols, rgb.shape[3]))
    )
    return np.round(sums / counts).astype(np.uint8).transpose(0, 2, 3, 1)


def _radius() -> np.ndarray:
    y, x = np.mgrid[: THUMB[0], : THUMB[1]]
    cy, cx = (THUMB[0] - 1) / 2, (THUMB[1] - 1) / 2
    return np.hypot((y - cy) / (THUMB[0] / 2), (x - cx) / (THUMB[1] / 2))


def scope_stats(thumbs: np.ndarray) -> np.ndarray:
    """N x 30 x 40 x 3 thumbnails -> N x STATS: brightness of the corners, the outer ring
    and four elliptical rings relative to the centre (dermoscopy's round field in a black
    surround), the share of near-black pixels, coarse illumination non-uniformity, and
    mean saturation overall and in the ring."""
    rgb = np.asarray(thumbs, np.float32)
    grey = rgb.mean(axis=3)
    radius = _radius()
    ring = radius > 0.9
    sat = (rgb.max(axis=3) - rgb.min(axis=3)) / (rgb.max(axis=3) + 1.0)
    out = np.empty((len(rgb), STATS), np.float32)
    centre = grey[:, 10:20, 13:27].mean(axis=(1, 2)) + 1.0
    corners = np.stack(
        [grey[:, :5, :5], grey[:, :5, -5:], grey[:, -5:, :5], grey[:, -5:, -5:]], axis=1
    ).mean(axis=(2, 3))
    out[:, 0] = corners.mean(axis=1) / centre
    out[:, 1] = corners.min(axis=1) / centre
    out[:, 2] = grey[:, ring].mean(axis=1) / centre
    for j, (lo, hi) in enumerate(((0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, 9.0))):
        out[:, 3 + j] = grey[:, (radius >= lo) & (radius < hi)].mean(axis=1) / centre
    out[:, 7] = (grey < 25).mean(axis=(1, 2))
    blocks = grey.reshape(len(grey), 6, 5, 8, 5).mean(axis=(2, 4))
    out[:, 8] = blocks.std(axis=(1, 2)) / (grey.mean(axis=(1, 2)) + 1.0)
    out[:, 9] = sat.mean(axis=(1, 2))
    out[:, 10] = sat[:, ring].mean(axis=1)
    out[:, 11] = grey.std(axis=(1, 2)) / (grey.mean(axis=(1, 2)) + 1.0)
    return out


@dataclass
class ScopeDecision:
    """The gate's decision on one image: its kind, the scores and the rule behind it."""

    kind: str  # one of KINDS
    scores: dict[str, float]  # p_dermoscopic, the outlier and colour scores (where computed)
    rule: str  # the technical rule that decided, with the thresholds
    sentence: str  # what the image seems to be, in plain words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Scope:
    """What a `Prediction` says about scope: the gate's kind, which model answered and why
    (or why none did), what the installed models cover and what to do."""

    kind: str  # the gate's decision, one of KINDS
    # stable code: answered, model_check (the model's own OOD check refused it), other_skin,
    # not_skin, no_model (no installed model for this kind), not_made_for (the pinned model)
    reason: str
    model: str | None  # the bundle that answered; None when no model answered
    why: str  # plain words: which model answered and why, or why none did
    rule: str  # the technical rule behind it (thresholds and scores)
    scores: dict[str, float] = field(default_factory=dict)
    covers: list[str] = field(default_factory=list)  # what the installed models cover
    advice: str = ""  # what to do (out of scope: see a clinician)


@dataclass
class GateFit:
    """The fitted numbers (`gate.npz`); see the module docstring for what each judge does."""

    mean: np.ndarray  # standardisation of [features, scope_stats] for the regression
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    kind_at: float  # p_dermoscopic at or above which a close-up like both kinds is dermoscopic
    derm_bank: np.ndarray  # unit features of dermoscopic training images (float16)
    derm_scale: float  # median leave-one-out k-NN distance in that bank
    derm_above: float  # dermoscopic score above which the image is unlike dermoscopic lesions
    lesion_bank: np.ndarray  # unit features of clinical-lesion training images (float16)
    lesion_scale: float  # median leave-one-patient-out k-NN distance in that bank
    lesion_above: float  # lesion score above which the image is unlike clinical close-ups
    colour_bank: np.ndarray  # colour descriptors of skin training images (both kinds)
    colour_scale: float
    colour_above: float  # colour score above which the image is not skin
    scene_derm_bank: np.ndarray  # the dermoscopic bank's images in the scene model's features
    scene_derm_scale: float
    scene_derm_above: float
    scene_lesion_bank: np.ndarray  # the clinical bank's images in the scene model's features
    scene_lesion_scale: float
    scene_lesion_above: float
    k: int = 5  # which nearest neighbour's distance is a score

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        values = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        np.savez(buffer, format=np.array(FORMAT), **values)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> GateFit:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{where}: not a readable gate file ({exc})") from exc
        if int(arrays.get("format", -1)) != FORMAT:
            raise BundleError(
                f"{where}: gate format {arrays.get('format')} is not {FORMAT}; refit the gate "
                f"(python -m dermalens.evaluation.scope_fit)"
            )
        missing = [f.name for f in fields(cls) if f.name not in arrays]
        if missing:
            raise BundleError(f"{where}: gate file lacks {missing}")
        return cls(**{f.name: _value(arrays[f.name]) for f in fields(cls)})


def _value(array: np.ndarray) -> Any:
    return array.item() if array.ndim == 0 else array


@dataclass
class Gate:
    """A loaded gate: its fit, and `gate.json` (routes, feature model, report)."""

    fit: GateFit
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self._derm = np.asarray(self.fit.derm_bank, np.float32)
        self._lesion = np.asarray(self.fit.lesion_bank, np.float32)
        self._colours = np.asarray(self.fit.colour_bank, np.float32)
        self._scene_derm = np.asarray(self.fit.scene_derm_bank, np.float32)
        self._scene_lesion = np.asarray(self.fit.scene_lesion_bank, np.float32)
        self.scene: SceneModel | None = None

    def open_scene(self, threads: int = 0) -> SceneModel:
        """The scene model beside gate.json, opened once (`threads` as the predictors')."""
        if self.scene is None:
            if self.path is None:
                raise BundleError("this gate has no folder, so no scene model to open")
            self.scene = SceneModel(self.path / SCENE_ONNX, threads)
        return self.scene

    def scene_features(self, batch: np.ndarray) -> np.ndarray:
        """The scene model's features of a batch preprocessed for the feature model."""
        return self.open_scene(threads=1).features(batch)

    @property
    def routes(self) -> dict[str, str]:
        """kind -> bundle folder name (under bundled/) made for it."""
        return dict(self.info.get("routes", {}))

    @property
    def feature_model(self) -> str:
        return str(self.info.get("feature_model", "default"))

    def p_dermoscopic(self, features: np.ndarray, stats: np.ndarray) -> np.ndarray:
        z = (np.concatenate([features, stats], axis=1) - self.fit.mean) / self.fit.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.fit.coef + self.fit.intercept)))

    def _knn(self, x: np.ndarray, bank: np.ndarray, scale: float) -> np.ndarray:
        return knn_distance(unit_rows(np.asarray(x, np.float32)), bank, int(self.fit.k)) / scale

    def decide(
        self, features: np.ndarray, pixels: np.ndarray, thumbs: np.ndarray, scene: np.ndarray
    ) -> list[ScopeDecision]:
        """One decision per image from the feature model's pooled features, its
        `ood.pixel_stats`, the gate's `thumbnails` and the scene model's features
        (`scene_features`) of the same preprocessed batch."""
        features = np.asarray(features, np.float32)
        fit = self.fit
        p = self.p_dermoscopic(features, scope_stats(thumbs))
        derm = self._knn(features, self._derm, fit.derm_scale)
        lesion = self._knn(features, self._lesion, fit.lesion_scale)
        colour = self._knn(np.asarray(pixels)[:, 3:], self._colours, fit.colour_scale)
        s_derm = self._knn(scene, self._scene_derm, fit.scene_derm_scale)
        s_lesion = self._knn(scene, self._scene_lesion, fit.scene_lesion_scale)
        out = []
        for i in range(len(features)):
            scores = {
                "p_dermoscopic": round(float(p[i]), 4),
                "dermoscopic_score": round(float(derm[i]), 3),
                "lesion_score": round(float(lesion[i]), 3),
                "scene_dermoscopic_score": round(float(s_derm[i]), 3),
                "scene_lesion_score": round(float(s_lesion[i]), 3),
                "colour_score": round(float(colour[i]), 3),
            }
            out.append(self._one(scores, pixels[i, :3]))
        return out

    def _one(self, scores: dict[str, float], tests: np.ndarray) -> ScopeDecision:
        fit = self.fit
        spread, corr, colourful = (float(v) for v in tests)
        if spread < MIN_PIXEL_STD or corr < MIN_NEIGHBOUR_CORR or colourful < MIN_COLOUR:
            rule = (
                f"not_skin: a flat frame (pixel std {spread:.1f} < {MIN_PIXEL_STD:g}), pixel "
                f"noise (neighbour correlation {corr:.2f} < {MIN_NEIGHBOUR_CORR:g}) or a "
                f"greyscale frame (colour spread {colourful:.1f} < {MIN_COLOUR:g})"
            )
            return ScopeDecision("not_skin", scores, rule, KIND_WORDS["not_skin"])
        colour = scores["colour_score"]
        if colour > fit.colour_above:
            rule = (
                f"not_skin: colour score {colour:.2f} > {fit.colour_above:.2f} (colours unlike "
                f"the skin images of both kinds)"
            )
            return ScopeDecision("not_skin", scores, rule, KIND_WORDS["not_skin"])
        p, derm, lesion = (
            scores["p_dermoscopic"],
            scores["dermoscopic_score"],
            scores["lesion_score"],
        )
        s_derm, s_lesion = scores["scene_dermoscopic_score"], scores["scene_lesion_score"]
        tests = [
            ("dermoscopic score", derm, fit.derm_above),
            ("scene", s_derm, fit.scene_derm_above),
        ]
        tests += [
            ("lesion score", lesion, fit.lesion_above),
            ("scene", s_lesion, fit.scene_lesion_above),
        ]
        like = ", ".join(f"{n} {v:.2f} {'<=' if v <= a else '>'} {a:.2f}" for n, v, a in tests)
        derm_ok = derm <= fit.derm_above and s_derm <= fit.scene_derm_above
        lesion_ok = lesion <= fit.lesion_above and s_lesion <= fit.scene_lesion_above
        if derm_ok and lesion_ok:
            kind = "dermoscopic" if p >= fit.kind_at else "clinical"
            sign = ">=" if kind == "dermoscopic" else "<"
            rule = (
                f"{kind}: {like}; like both kinds, p_dermoscopic {p:.3f} {sign} {fit.kind_at:.3f}"
            )
        elif derm_ok or lesion_ok:
            kind = "dermoscopic" if derm_ok else "clinical"
            rule = f"{kind}: {like}"
        else:
            kind = "other_skin"
            rule = f"other_skin: {like} (unlike the lesion close-ups of both kinds in training)"
        return ScopeDecision(kind, scores, rule, KIND_WORDS[kind])


def load_gate(folder: str | Path | None = None) -> Gate | None:
    """The gate in `folder` (default: bundled/gate), or None when it has no gate.json;
    gate.npz and scene.onnx must match the hashes gate.json records."""
    folder = Path(folder) if folder is not None else GATE_DIR
    if not (folder / GATE_JSON).is_file():
        return None
    try:
        info = json.loads((folder / GATE_JSON).read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{folder / GATE_JSON}: not valid JSON ({exc})") from exc
    npz = folder / GATE_NPZ
    if not npz.is_file() or sha256(npz) != info.get("gate_sha256"):
        raise BundleError(
            f"{npz}: missing, or its content hash does not match {GATE_JSON}; refit the "
            f"gate (python -m dermalens.evaluation.scope_fit)"
        )
    scene = folder / SCENE_ONNX
    if not scene.is_file() or sha256(scene) != info.get("scene_sha256"):
        raise BundleError(
            f"{scene}: missing, or its content hash does not match {GATE_JSON}; refit the "
            f"gate (python -m dermalens.evaluation.scope_fit)"
        )
    return Gate(GateFit.from_bytes(npz.read_bytes(), str(npz)), info, folder)
