"""Prediction: `Predictor(bundle).predict(image)` -> a typed `Prediction`.

    from dermalens import Predictor
    result = Predictor("src/dermalens/bundled/default").predict("lesion.jpg", top_k=3)

The CLI, `evaluate`, the web service and Python users all go through `Predictor`, and it
preprocesses with `preprocess.to_input`: one path from pixels to probabilities.

Optional test-time augmentation (`tta=True`) averages the probabilities of the input, its
horizontal and vertical flips and its 180-degree rotation, made on the preprocessed
array (one batched model call, no second decode). When the bundle holds an OOD check
(`ood.npz`, see `runtime.ood`), an image that does not look like a dermoscopic skin
image gets `not_skin=True`, `uncertain=True` and triage "not_skin". When the bundle holds
a shift warning (`thresholds["shift"]`, see `runtime.shift`), `Prediction.shift` says
whether the image's acquisition statistics lie outside what validation showed; it changes
no answer, it says the operating point may not hold.

A model whose classes include one of unknown malignancy (an open class from an image
folder that no classes.csv flags, or a rash group; `Bundle.malignant` None) gives no
benign / malignant triage: triage "unavailable", its rule naming those classes ("not_skin"
and "uncertain" still come first). Class names and flags come from the bundle.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermalens import patient
from dermalens.bundle import Bundle, load_bundle
from dermalens.imageio import ImageSource
from dermalens.preprocess import to_input
from dermalens.runtime.calibration import Calibration, tta_views
from dermalens.runtime.checks import ImageStats, image_checks
from dermalens.runtime.engines import Engine
from dermalens.runtime.explain import cam_grid, upsample
from dermalens.runtime.ood import OodDetector, load_ood
from dermalens.runtime.scope import Scope
from dermalens.runtime.selection import make_engine
from dermalens.runtime.shift import ShiftFlag, ShiftMonitor
from dermalens.wording import N_

DEFAULT_UNCERTAIN = 0.5  # the answer's probability below which the answer is "uncertain"


DEFAULT_TRIAGE = 0.5  # summed malignant probability at or above which triage says malignant


DISCLAIMER = N_(
    "Decision support only, not a diagnosis. A clinician must examine the lesion; "
    "see a dermatologist about any lesion that worries you."
)


# shown with a "not skin" answer: the check also turns away some real lesions (about 1-2%
# of test images, more among melanomas for some models; see the model card)
NOT_SKIN_ADVICE = N_(
    "if this is a photo of a skin lesion, it gets no triage answer here, and a clinician "
    "must examine the lesion"
)


@dataclass
class ClassScore:
    code: str
    name: str
    probability: float
    malignant: bool | None  # None: unknown (no triage from a model with such a class)


@dataclass
class Prediction:
    """One image's result: probabilities, top-k, triage, uncertainty, optional heatmap."""

    classes: list[str]
    probabilities: list[float]
    # the answer first, then the runners-up, ranked by the decision rule (see
    # `Predictor.decide`); each with its calibrated probability, which need not fall
    top: list[ClassScore]
    malignant_probability: float | None  # None when no model answered (out of scope)
    triage: str  # "malignant" | "benign" | "uncertain" | "not_skin" | "unavailable"
    triage_rule: str
    uncertain: bool
    model_version: str
    source: str = ""
    heatmap: np.ndarray | None = field(default=None, repr=False)  # HxW in [0, 1], input size
    # the same map at feature-map resolution (e.g. 5 x 7), before upsampling: `heatmap` is
    # `explain.upsample(heatmap_grid, input size)`
    heatmap_grid: np.ndarray | None = field(default=None, repr=False)
    timings_ms: dict[str, float] = field(default_factory=dict)
    ood_score: float | None = None  # ~1 on typical skin images; None without an OOD check
    not_skin: bool = False  # the OOD check says this is not a dermoscopic skin image
    not_skin_reason: str = ""
    tta: bool = False  # probabilities averaged over flips and a 180-degree rotation
    # unlike the validation images (acquisition shift); None: the bundle has no shift warning
    shift: ShiftFlag | None = None
    # "ok" (a definite answer), "uncertain", "not_skin" or "out_of_scope" (no installed model
    # is made for this image: no classes, no triage); see `runtime.router`
    status: str = "ok"
    scope: Scope | None = None  # the scope gate's decision, which model answered and why

    @property
    def label(self) -> str:
        return self.top[0].code if self.top else ""

    def to_dict(self, heatmap: bool = False) -> dict[str, Any]:
        out = asdict(self)
        for name in ("heatmap", "heatmap_grid"):
            value = getattr(self, name)
            out[name] = value.round(4).tolist() if heatmap and value is not None else None
        out["disclaimer"] = DISCLAIMER
        return out


class Predictor:
    """Loads a bundle once; predicts single images or batches.

    `tta` sets the default for test-time augmentation; `ood=False` skips the bundle's
    out-of-distribution check even when it has one.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        backend: str = "auto",
        threads: int = 0,
        tta: bool = False,
        ood: bool = True,
        precision: str = "fp32",
        spinning: bool = True,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        # precision: "fp32" (model.onnx) or "auto" (see runtime.selection)
        # spinning: ONNX Runtime threads busy-wait between calls (see `OnnxEngine`)
        self.engine: Engine = make_engine(self.bundle, backend, threads, precision, spinning)
        self.pre = self.bundle.preprocessing
        self.tta = tta
        self.names, self.flags = self.bundle.display_names, self.bundle.malignant
        # P(malignant) sums only the classes flagged True; unknown (None) ones count as not
        self.malignant_mask = np.array([bool(f) for f in self.flags], dtype=bool)
        self.unknown_malignancy = self.bundle.unknown_malignancy
        self.read_calibration()
        self.ood: OodDetector | None = load_ood(self.bundle) if ood else None

    def read_calibration(self) -> None:
        """(Re)read the bundle's calibration and thresholds (after `calibrate` changed them)."""
        thresholds = self.bundle.thresholds
        self.uncertain_below = float(thresholds.get("uncertain_below", DEFAULT_UNCERTAIN))
        self.triage_at = float(thresholds.get("triage_malignant", DEFAULT_TRIAGE))
        self.calibration = Calibration.of(self.bundle)
        self.shift: ShiftMonitor | None = ShiftMonitor.of(self.bundle)

    def prepare(self, source: ImageSource) -> np.ndarray:
        return to_input(source, self.pre)

    def meta_vector(
        self, age=None, sex=None, site=None, clinical: dict | None = None
    ) -> np.ndarray | None:
        """The model's metadata row (None if it takes none). `clinical`: any of
        `patient.CLINICAL` (checked; fields this model does not take are ignored, so one set
        of answers can go to any model); absent or None = missing."""
        if not self.bundle.metadata_fields:
            return None
        patient.validate(age, sex, site)
        extra = patient.validate_clinical(clinical or {})
        values = {"age": age, "sex": sex, "site": site, **extra}
        return patient.encode_fields(self.bundle.metadata_fields, values)[None]

    def forward(
        self, batch: np.ndarray, meta: np.ndarray | None = None, tta: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits, views x N x classes (1 view, or 4 with TTA), and view 0's feature map."""
        tta = self.tta if tta is None else tta
        n = len(batch)
        if tta:
            batch = tta_views(batch)
            meta = None if meta is None else np.concatenate([meta] * 4)
        logits, fmap = self.engine.run(batch, meta)
        return logits.reshape(-1, n, logits.shape[-1]), fmap[:n]

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Views x N x classes logits -> N x classes calibrated probabilities."""
        return self.calibration.probabilities(logits)

    def decision_scores(self, probs: np.ndarray) -> np.ndarray:
        return self.calibration.scores(probs)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """N x classes calibrated probabilities -> the index of each image's answer."""
        return self.calibration.decide(probs)

    def probabilities(
        self, batch: np.ndarray, meta: np.ndarray | None = None, tta: bool | None = None
    ) -> np.ndarray:
        logits, _ = self.forward(batch, meta, tta)
        return self.calibrated(logits)

    def ood_check(
        self, batch: np.ndarray, fmap: np.ndarray, pixels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """(OOD scores, not-skin flags, reasons) for preprocessed images, or None if no check.

        `pixels`: the batch's `ood.pixel_stats` when already computed (folder decoders do).
        With the shift warning too, `checks.image_checks` scores the colours once for both."""
        return image_checks(self.ood, None, ImageStats(batch, fmap, self.pre, pixels))[0]

    def predict(
        self,
        source: ImageSource,
        top_k: int = 3,
        explain: bool = False,
        age: float | None = None,
        sex: str | None = None,
        site: str | None = None,
        tta: bool | None = None,
        clinical: dict | None = None,
    ) -> Prediction:
        """`clinical`: optional clinical fields (`patient.CLINICAL`: fitzpatrick, itch, grew,
        hurt, changed, bleed, elevation, diameter_1, diameter_2) for a model that takes them."""
        t0 = time.perf_counter()
        x = self.prepare(source)[None]
        meta = self.meta_vector(age, sex, site, clinical)
        name = str(source) if isinstance(source, str | Path) else ""
        return self.predict_input(x, meta, top_k, explain, tta, name, started=t0)

    def predict_input(
        self,
        x: np.ndarray,
        meta: np.ndarray | None,
        top_k: int = 3,
        explain: bool = False,
        tta: bool | None = None,
        source: str = "",
        forwarded: tuple[np.ndarray, np.ndarray] | None = None,
        started: float | None = None,
        stats: ImageStats | None = None,
    ) -> Prediction:
        """`predict` on one preprocessed image (1 x 3 x H x W); `forwarded`: this image's
        `forward` output, `stats` its `ImageStats`, when already computed (the router's
        gate needs both first)."""
        t1 = time.perf_counter()
        t0 = t1 if started is None else started
        tta = self.tta if tta is None else tta
        logits, fmap = forwarded if forwarded is not None else self.forward(x, meta, tta)
        probs = self.calibrated(logits)[0]
        stats = ImageStats(x, fmap, self.pre) if stats is None else stats
        ood, shift = image_checks(self.ood, self.shift, stats)
        t2 = time.perf_counter()
        heatmap = grid = None
        if explain:
            grid = cam_grid(fmap[0], self.engine.head()[0], int(self.decide(probs[None])[0]))
            heatmap = upsample(grid, (self.pre.height, self.pre.width))
        t3 = time.perf_counter()
        result = self.result(
            probs,
            top_k,
            source,
            ood_score=None if ood is None else float(ood[0][0]),
            not_skin_reason="" if ood is None else ood[2][0],
            shift=None if shift is None else shift[0],
        )
        result.heatmap, result.heatmap_grid = heatmap, grid
        result.tta = tta
        result.timings_ms = {
            "preprocess": round((t1 - t0) * 1e3, 2),
            "inference": round((t2 - t1) * 1e3, 2),
            "heatmap": round((t3 - t2) * 1e3, 2),
        }
        return result

    def result(
        self,
        probs: np.ndarray,
        top_k: int = 3,
        source: str = "",
        ood_score: float | None = None,
        not_skin_reason: str = "",
        shift: ShiftFlag | None = None,
    ) -> Prediction:
        classes = self.bundle.classes
        # ranked by the decision rule, so top[0] is the answer; each with its probability
        scores = self.decision_scores(probs[None])[0]
        order = np.argsort(-scores, kind="stable")[: max(1, min(top_k, len(classes)))]
        top = [ClassScore(classes[i], self.names[i], float(probs[i]), self.flags[i]) for i in order]
        p_mal = float(probs[self.malignant_mask].sum())
        not_skin = bool(not_skin_reason)
        uncertain = not_skin or bool(probs[order[0]] < self.uncertain_below)
        if not_skin:
            triage = "not_skin"
        elif uncertain:
            triage = "uncertain"
        elif self.unknown_malignancy:
            triage = "unavailable"
        else:
            triage = "malignant" if p_mal >= self.triage_at else "benign"
        if self.unknown_malignancy:
            rule = self.no_triage_rule()
        else:
            rule = f"malignant if P(malignant classes) >= {self.triage_at:.3f}"
        rule += f"; uncertain if the answer's probability < {self.uncertain_below:.3f}"
        if self.ood is not None:
            rule += (
                f"; not_skin (and uncertain) if a flat frame, pixel noise or a greyscale "
                f"frame, or OOD score > {self.ood.threshold:.2f}"
            )
            if self.ood.colour_bank is not None:
                rule += f", or colour score > {self.ood.colour_threshold:.2f}"
        return Prediction(
            classes=list(classes),
            probabilities=[float(p) for p in probs],
            top=top,
            malignant_probability=p_mal,
            triage=triage,
            triage_rule=rule,
            uncertain=uncertain,
            model_version=self.bundle.version,
            source=source,
            ood_score=ood_score,
            not_skin=not_skin,
            not_skin_reason=not_skin_reason,
            shift=shift,
            status="not_skin" if not_skin else "uncertain" if uncertain else "ok",
        )

    def no_triage_rule(self, shown: int = 5) -> str:
        """Why a model with classes of unknown malignancy gives no triage, naming them."""
        unknown = [
            f"{name} ({code})"
            for code, name, flag in zip(self.bundle.classes, self.names, self.flags)
            if flag is None
        ]
        more = f" and {len(unknown) - shown} more" if len(unknown) > shown else ""
        return (
            f"no benign / malignant triage (unavailable): the malignancy of "
            f"{', '.join(unknown[:shown])}{more} is not known, so a clinician must decide"
        )
