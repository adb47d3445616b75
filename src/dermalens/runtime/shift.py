"""A shift warning: do these images differ from the data the model was validated on?

    monitor = ShiftMonitor.of(bundle)               # None when the bundle has no reference
    stats = acquisition_stats(batch, bundle.preprocessing, feature_scores, colour_scores)
    flags, reasons = monitor.check(stats)
    monitor.flags(stats)                            # one `ShiftFlag` per image (Prediction.shift)
    monitor.batch_warning(flags)                    # a folder, or the last N requests

The OOD check (`runtime.ood`) asks "is this a skin image at all?"; this asks "is it the kind
of skin image the model's operating points were chosen on?". Each image gets a few
acquisition statistics computed on the model's input pixels: brightness, contrast,
saturation, colour cast (mean r and g chromaticity), sharpness and fine-grain noise (from
the Laplacian), the dark share of the frame's border (a dermatoscope's ring, a zoomed-out
frame), the hue angle of the mean opponent colour (a tint), the corners' brightness
against the centre's (vignetting), the share of fine detail in the spectrum (low when the
image was enlarged from a source smaller than the model's input, blurred or compressed)
and, when the bundle has an OOD check, its feature and
colour scores (distances to the nearest training images: feature density and colour
distribution). The reference is the
validation images' distribution of each statistic (`evaluation.shift_fit`): an image is
flagged when any statistic falls outside its central band, the bands being as wide as
needed for a fixed small share of validation images to be flagged. A batch is flagged
when clearly more of its images are flagged than that share (a one-sided binomial test).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from dermalens.bundle import Bundle
from dermalens.preprocess import Preprocessing
from dermalens.wording import N_

STATS = (
    "brightness",
    "contrast",
    "saturation",
    "red_chroma",
    "green_chroma",
    "sharpness",
    "noise",
    "dark_border",
    "hue",
    "corner_light",
    "fine_detail",
    "ood_score",
    "colour_score",
)
BORDER = 0.1  # the outer tenth of each side is the "border"
CORNER = 0.15  # corner squares of this share of the short side, for "corner_light"
DARK = 30.0  # 0-255: darker than this in every channel counts as black
FINE = (0.7, 1.0)  # "fine" spatial frequencies, as shares of the Nyquist frequency
MIDDLE = (0.15, 0.4)  # the "middle" ones it is compared with
WARNING = N_(
    "these images differ from the data this model was validated on; its operating point "
    "(triage threshold, abstention) may not hold"
)
IMAGE_WARNING = N_(
    "this image differs from the data this model was validated on; its operating point "
    "(triage threshold, abstention) may not hold"
)
BATCH_MIN = 10  # images a batch needs before it can be judged as a whole
BATCH_P = 0.001  # p-value of the binomial test below which a batch is flagged


def _grey_laplacian(grey: np.ndarray) -> np.ndarray:
    return (
        grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    )


def _median(values: np.ndarray) -> np.floating:
    """`np.median` of a flat array, the same value: one partition at the upper middle and
    the maximum below it (a partition at two indices takes about four times as long)."""
    half = values.size // 2
    part = np.partition(values, half)
    if values.size % 2:
        return part[half]
    return np.mean(np.stack([part[:half].max(), part[half]]))


@functools.cache
def _frequency_masks(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Hann window, fine-band mask, middle-band mask) of `np.fft.rfft2` on an h x w image."""
    radius = np.hypot(np.fft.fftfreq(h)[:, None] * 2, np.fft.rfftfreq(w)[None, :] * 2)
    fine = (radius >= FINE[0]) & (radius <= FINE[1])
    middle = (radius >= MIDDLE[0]) & (radius < MIDDLE[1])
    return np.outer(np.hanning(h), np.hanning(w)), fine, middle


def fine_detail(grey: np.ndarray) -> float:
    """log(mean power at FINE frequencies / mean power at MIDDLE ones) of a grey image.

    An image enlarged to the model's input (a source smaller than it) has nothing near the
    Nyquist frequency, as a blurred or strongly compressed one; a sharp image downscaled
    keeps some. On HAM10000 validation images enlarged from 0.9 of their size it falls
    by about 1.4 (benchmarks/RESULTS.md, "Shift warning: a fine-detail statistic")."""
    window, fine, middle = _frequency_masks(*grey.shape)
    power = np.abs(np.fft.rfft2((grey - grey.mean()) * window)) ** 2
    return float(np.log((power[fine].mean() + 1e-12) / (power[middle].mean() + 1e-12)))


def acquisition_stats(
    batch: np.ndarray,
    pre: Preprocessing,
    feature_scores: np.ndarray | None = None,
    colour_scores: np.ndarray | None = None,
) -> np.ndarray:
    """N x 3 x H x W preprocessed images -> N x len(STATS); the OOD columns are NaN unless
    the OOD check's scores for the same images are given."""
    std = np.asarray(pre.std, np.float32)[:, None, None]
    mean = np.asarray(pre.mean, np.float32)[:, None, None]
    out = np.full((len(batch), len(STATS)), np.nan, np.float64)
    for i, image in enumerate(np.asarray(batch, np.float32)):
        rgb = np.clip(image * std + mean, 0, 255)
        grey = rgb.mean(axis=0)
        high, low = rgb.max(axis=0), rgb.min(axis=0)
        total = rgb.sum(axis=0) + 1.0
        lap = _grey_laplacian(grey)
        h, w = grey.shape
        bh, bw = max(1, int(h * BORDER)), max(1, int(w * BORDER))
        border = np.ones((h, w), bool)
        border[bh:-bh, bw:-bw] = False
        c = max(1, int(min(h, w) * CORNER))
        corners = np.concatenate(
            [grey[:c, :c], grey[:c, -c:], grey[-c:, :c], grey[-c:, -c:]], axis=None
        )
        centre = grey[h // 4 : h - h // 4, w // 4 : w - w // 4]
        red, green, blue = rgb.reshape(3, -1).mean(axis=1)
        out[i, :11] = (
            grey.mean(),
            grey.std(),
            ((high - low) / (high + 1.0)).mean(),
            (rgb[0] / total).mean(),
            (rgb[1] / total).mean(),
            np.log1p(lap.var()),
            np.log1p(_median(np.abs(lap).ravel())),
            (high[border] < DARK).mean(),
            np.degrees(np.arctan2((red + green) / 2 - blue, red - green)),
            (corners.mean() + 1.0) / (centre.mean() + 1.0),
            fine_detail(grey),
        )
    if feature_scores is not None:
        out[:, STATS.index("ood_score")] = feature_scores
    if colour_scores is not None:
        out[:, STATS.index("colour_score")] = colour_scores
    return out


@dataclass
class ShiftFlag:
    """One image's shift warning, as `Prediction.shift` carries it."""

    flagged: bool
    measures: list[str]  # the statistics outside their validation band, e.g. "saturation low"
    message: str  # IMAGE_WARNING when flagged, else ""


@dataclass
class ShiftMonitor:
    """Central bands per statistic, fitted on validation images (see the module docstring)."""

    low: np.ndarray  # per STATS entry; NaN: the statistic is not used
    high: np.ndarray
    expected: float  # share of validation images flagged: the clean rate
    level: float  # the two-sided tail share each band leaves out on validation

    @classmethod
    def of(cls, bundle: Bundle) -> ShiftMonitor | None:
        ref = bundle.thresholds.get("shift")
        if not ref:
            return None
        names = list(ref["stats"])
        low = np.array([ref["low"][names.index(s)] if s in names else np.nan for s in STATS])
        high = np.array([ref["high"][names.index(s)] if s in names else np.nan for s in STATS])
        return cls(low, high, float(ref["expected"]), float(ref["level"]))

    def to_dict(self) -> dict:
        used = [i for i in range(len(STATS)) if not np.isnan(self.low[i])]
        return {
            "stats": [STATS[i] for i in used],
            "low": [float(self.low[i]) for i in used],
            "high": [float(self.high[i]) for i in used],
            "expected": self.expected,
            "level": self.level,
            "rule": (
                f"shifted if any statistic lies outside the band that holds all but "
                f"{self.level:.2%} of validation images; {self.expected:.1%} of validation "
                f"images are flagged"
            ),
        }

    def check(self, stats: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(flagged per image, reasons: the statistics out of band, '' when in band)."""
        stats = np.asarray(stats, np.float64)
        with np.errstate(invalid="ignore"):
            below, above = stats < self.low, stats > self.high
        reasons = []
        for lo, hi in zip(below, above):
            parts = [f"{STATS[j]} low" for j in np.flatnonzero(lo)]
            parts += [f"{STATS[j]} high" for j in np.flatnonzero(hi)]
            reasons.append(", ".join(parts))
        return np.array([bool(r) for r in reasons]), reasons

    def flags(self, stats: np.ndarray) -> list[ShiftFlag]:
        """`check` as one `ShiftFlag` per image."""
        flagged, reasons = self.check(stats)
        return [
            ShiftFlag(bool(f), r.split(", ") if r else [], IMAGE_WARNING if f else "")
            for f, r in zip(flagged, reasons)
        ]

    def batch_warning(self, flags: np.ndarray) -> dict:
        """Whether a batch of images, taken together, differs from validation."""
        n, k = len(flags), int(np.sum(flags))
        p_value = float(binom.sf(k - 1, n, max(self.expected, 1e-4))) if n else 1.0
        shifted = n >= BATCH_MIN and p_value < BATCH_P
        return {
            "images": n,
            "flagged": k,
            "share": k / n if n else 0.0,
            "expected_share": self.expected,
            "p_value": p_value,
            "shifted": shifted,
            "message": WARNING if shifted else "",
        }
