"""Change between two images of the same lesion at two visits: colour, size, structure.

    from dermalens.runtime.change import describe, compare, embed
    before = describe(image_1, embed(predictor, image_1))
    after = describe(image_2, embed(predictor, image_2))
    result = compare(before, after)        # ChangeScore: parts, combined score, changed flag

`describe` segments the lesion (CIELAB lightness, Gaussian blur, Otsu's threshold, the dark
component that covers most of the image's central ellipse, holes filled) and summarises it:
its share of the image, its mean colour relative to the surrounding skin, and optionally
the model's pooled feature vector (`embed`). `compare` turns two summaries into the three
parts of `ChangeScore` and combines them: each part is divided by its `ChangeScales` value
(about the 95th percentile of that part over pairs of photographs of one unchanged
lesion), the combined score is a logistic function of their weighted sum, and `changed` is
the score at or above `ChangeScales.threshold` or the lesion's area grown by more than its
scale. The scales, weights and threshold were
fitted on one half of the HAM10000 lesions by `benchmarks/change_score.py` and checked on
the other half; see `benchmarks/RESULTS.md` ("Change score") for what they detect and miss.

The HAM10000 "same lesion" images are re-photographs (other zoom, angle, light) without
known change, not follow-up visits: the scales describe re-photographing noise, and a real
follow-up series may need other values. Decision support only, like every output here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color, filters

from dermalens.imageio import ImageSource, load_image
from dermalens.runtime.ood import pooled

WORK_SIZE = 256  # the longer side the image is resized to before segmenting (pixels)
BLUR = 0.01  # Gaussian sigma as a share of the image diagonal (hairs, speckle)
SKIN_GAP = 0.03  # skin ring starts this share of the diagonal outside the lesion

MEASURES = {
    "colour": "CIE76 colour difference (Delta E in CIELAB) between the two visits' lesion "
    "colour, each taken as the lesion's mean L*a*b* minus the surrounding skin's, so a "
    "change of light or exposure that shifts both cancels out",
    "size": "|log(area after / area before)| of the segmented lesion as a share of the image "
    "(0.18 is about 20% more or less area); depends on the framing being alike",
    "growth": "the same log ratio with its sign: positive when the lesion's share grew",
    "structure": "cosine distance between the model's pooled feature vectors of the two "
    "images (0 identical, 1 unrelated): a change in pattern the model notices",
    "score": "the parts combined, between 0 and 1: each divided by its scale (1 = as large as "
    "about 95% of re-photographs of one unchanged lesion show), weighted and summed, then "
    "a logistic function; the weights were fitted to tell built changes from re-photographs",
}


@dataclass(frozen=True)
class ChangeScales:
    """Each part's scale, how the ratios combine, the threshold and the P(malignant) margin.

    score = sigmoid(bias + sum of weight * part / scale): a logistic regression (weights kept
    non-negative) fitted on the fit lesions' unchanged against changed pairs; a missing
    structure part is left out. Fitted by benchmarks/change_score.py (see the module)."""

    colour: float
    size: float
    structure: float  # fitted on the bundled default model's features
    weights: tuple[float, float, float]  # colour, size, structure
    bias: float
    threshold: float  # score at or above which the pair is "changed"
    malignant_margin: float  # a P(malignant) rise above this flags the lesion too
    fitted: str = ""


# Any two photographs of the lesion (other zoom, angle, light: HAM10000's re-photographs).
# Both fits give size no weight in the score (colour changes move the segmented area too,
# and re-framing moves it more); growth past the size scale flags a pair on its own.
ANY_FRAMING = ChangeScales(
    colour=29.35,
    size=2.184,
    structure=0.4599,
    weights=(1.007, 0.0, 1.671),
    bias=-1.335,
    threshold=0.6788,
    malignant_margin=0.3749,
    fitted="benchmarks/change_score.py, 2026-12-03, HAM10000 fit lesions, re-photographed",
)
# Follow-up photographs with the same device and zoom, the lesion centred (simulated by
# re-shooting one image: small turn and shift, exposure, JPEG). Far more sensitive; on
# re-photographs at another zoom it flags most pairs (see benchmarks/RESULTS.md).
SAME_FRAMING = ChangeScales(
    colour=7.598,
    size=0.2835,
    structure=0.1256,
    weights=(1.781, 0.0, 2.068),
    bias=-2.438,
    threshold=0.5458,
    malignant_margin=0.1998,
    fitted="benchmarks/change_score.py, 2026-12-03, HAM10000 fit lesions, same framing",
)
PRESETS = {"any": ANY_FRAMING, "same": SAME_FRAMING}
DEFAULT_SCALES = ANY_FRAMING
# P(malignant) rising by more than this between visits flags the lesion: the 95th percentile
# of |P(malignant) difference| between re-photographs of one lesion (fit lesions, default
# model): that probability moves a lot between two photographs of one unchanged lesion
P_MALIGNANT_MARGIN = DEFAULT_SCALES.malignant_margin


@dataclass
class LesionView:
    """One image's lesion summary: what `compare` needs from each visit."""

    area_fraction: float  # segmented lesion pixels / image pixels
    lesion_lab: tuple[float, float, float]  # mean CIELAB inside the lesion
    skin_lab: tuple[float, float, float]  # mean CIELAB of the skin ring around it
    segmented: bool  # False: no lesion told apart from skin (the parts are less reliable)
    embedding: np.ndarray | None = field(default=None, repr=False)  # unit-length features
    mask: np.ndarray | None = field(default=None, repr=False)  # at WORK_SIZE

    @property
    def contrast(self) -> np.ndarray:
        return np.subtract(self.lesion_lab, self.skin_lab)


@dataclass
class ChangeScore:
    """The change from `before` to `after`; `MEASURES` says what each part measures."""

    colour: float  # Delta E of lesion-minus-skin colour
    size: float  # |log area ratio|
    growth: float  # signed log area ratio (positive: larger)
    structure: float | None  # cosine distance of features; None without embeddings
    score: float  # in [0, 1]: sigmoid(bias + sum of weight * part / scale)
    changed: bool  # score >= threshold, or the area grew by more than the size scale
    threshold: float
    growth_limit: float  # growth at or above which the pair is changed (the size scale)
    reliable: bool  # both images had a lesion segmented
    measures: dict[str, str] = field(default_factory=lambda: dict(MEASURES))

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items()}


def working_image(source: ImageSource | np.ndarray) -> np.ndarray:
    """RGB as float in [0, 1], resized so its longer side is WORK_SIZE."""
    image = Image.fromarray(source) if isinstance(source, np.ndarray) else load_image(source)
    scale = WORK_SIZE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.convert("RGB").resize(size, Image.BILINEAR), dtype=np.float32) / 255


def central_ellipse(shape: tuple[int, int]) -> np.ndarray:
    """The ellipse inscribed in the frame: dermatoscope vignettes darken the corners."""
    y, x = np.ogrid[: shape[0], : shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return ((y - cy) / (shape[0] / 2)) ** 2 + ((x - cx) / (shape[1] / 2)) ** 2 <= 1


def segment(lab: np.ndarray) -> np.ndarray | None:
    """Lesion mask from a CIELAB image, or None when no dark region stands out.

    Lesions are darker than skin: Otsu's threshold on blurred lightness, then the connected
    component with the most "darkness" inside the central ellipse (pixels there times the
    square of how far below the threshold they are on average), so a faint shaded rim or
    vignette loses to a smaller but clearly darker lesion; holes filled.
    """
    diagonal = float(np.hypot(*lab.shape[:2]))
    lightness = ndimage.gaussian_filter(lab[..., 0], BLUR * diagonal)
    if np.ptp(lightness) < 1:  # flat frame: nothing to separate
        return None
    threshold = filters.threshold_otsu(lightness)
    labels, count = ndimage.label(lightness < threshold)
    if count == 0:
        return None
    central = labels[central_ellipse(labels.shape)]
    inside = np.bincount(central, minlength=count + 1).astype(np.float64)
    depth = np.bincount(
        central, weights=threshold - lightness[central_ellipse(labels.shape)], minlength=count + 1
    )
    darkness = np.where(inside > 0, depth**2 / np.maximum(inside, 1), 0)  # n * mean depth^2
    darkness[0] = 0
    mask = ndimage.binary_fill_holes(labels == int(darkness.argmax()))
    share = mask.mean()
    return mask if 0.002 <= share <= 0.95 else None


def skin_ring(mask: np.ndarray) -> np.ndarray:
    """Skin around the lesion: outside a gap round it and inside the central ellipse."""
    gap = max(1, round(SKIN_GAP * float(np.hypot(*mask.shape))))
    ring = ~ndimage.binary_dilation(mask, iterations=gap) & central_ellipse(mask.shape)
    return ring if ring.sum() >= 50 else ~mask


def describe(source: ImageSource | np.ndarray, embedding: np.ndarray | None = None) -> LesionView:
    """Segment one image's lesion and summarise it (`embedding`: from `embed`, optional)."""
    lab = color.rgb2lab(working_image(source))
    mask = segment(lab)
    segmented = mask is not None
    if mask is None:  # fall back to the central ellipse so colour is still defined
        mask = central_ellipse(lab.shape[:2])
    skin = skin_ring(mask) if segmented else ~mask
    skin = skin if skin.any() else np.ones_like(mask)
    return LesionView(
        area_fraction=float(mask.mean()) if segmented else 0.0,
        lesion_lab=tuple(float(v) for v in lab[mask].mean(axis=0)),
        skin_lab=tuple(float(v) for v in lab[skin].mean(axis=0)),
        segmented=segmented,
        embedding=None if embedding is None else unit(embedding),
        mask=mask,
    )


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def embed(predictor, source: ImageSource) -> np.ndarray:
    """The model's pooled feature vector of one image (a `Predictor`; one model call)."""
    _, fmap = predictor.forward(predictor.prepare(source)[None], tta=False)
    return unit(pooled(fmap)[0])


def log_area_ratio(before: LesionView, after: LesionView) -> float:
    floor = 1e-3  # a lesion below 0.1% of the image counts as that small
    return float(np.log(max(after.area_fraction, floor) / max(before.area_fraction, floor)))


def compare(
    before: LesionView, after: LesionView, scales: ChangeScales = DEFAULT_SCALES
) -> ChangeScore:
    """The change from `before` to `after`: each part, the combined score and the flag."""
    colour = float(np.linalg.norm(after.contrast - before.contrast))
    reliable = before.segmented and after.segmented
    growth = log_area_ratio(before, after) if reliable else 0.0
    structure = None
    if before.embedding is not None and after.embedding is not None:
        structure = float(np.clip(1 - before.embedding @ after.embedding, 0, 2))
    ratios = [colour / scales.colour, abs(growth) / scales.size]
    if structure is not None:
        ratios.append(structure / scales.structure)
    z = scales.bias + float(np.dot(scales.weights[: len(ratios)], ratios))
    score = float(1 / (1 + np.exp(-z)))
    return ChangeScore(
        colour=colour,
        size=abs(growth),
        growth=growth,
        structure=structure,
        score=score,
        # growth past the size scale counts on its own: the fitted weights give size little
        # say, since colour changes also move the segmented area (see benchmarks/RESULTS.md)
        changed=score >= scales.threshold or growth >= scales.size,
        threshold=scales.threshold,
        growth_limit=scales.size,
        reliable=reliable,
    )


def change_between(
    predictor, before: ImageSource, after: ImageSource, scales: ChangeScales = DEFAULT_SCALES
) -> ChangeScore:
    """The change from one visit's image to the next's (a `Predictor` gives the features)."""
    views = [describe(image, embed(predictor, image)) for image in (before, after)]
    return compare(views[0], views[1], scales)


def since_last_visit(
    change: ChangeScore | None,
    p_malignant_before: float,
    p_malignant_after: float,
    margin: float = P_MALIGNANT_MARGIN,
) -> tuple[bool, list[str]]:
    """The "changed since last visit" flag and its reasons: P(malignant) rose by more than
    `margin`, or the change score reached its threshold, or the lesion's area grew past the
    growth limit (`change` None: no images to compare)."""
    reasons = []
    rise = p_malignant_after - p_malignant_before
    if rise > margin:
        reasons.append(f"malignant probability rose by {rise:.3f} (more than {margin:.3f})")
    if change is not None and change.score >= change.threshold:
        reasons.append(f"change score {change.score:.2f} reached {change.threshold:.2f}")
    if change is not None and change.growth >= change.growth_limit:
        grew, limit = np.expm1(change.growth), np.expm1(change.growth_limit)
        reasons.append(f"lesion area grew by {grew:.0%} (limit {limit:.0%} of the image share)")
    return bool(reasons), reasons
