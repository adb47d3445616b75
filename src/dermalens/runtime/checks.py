"""The checks around the model, each per-image statistic computed once per batch.

    stats = ImageStats(batch, fmap, pre)    # each statistic computed on first use, then kept
    decisions = gate.decide(stats.features, stats.pixels, stats.thumbs)
    ood, shift = image_checks(detector, monitor, stats)

The scope gate (`runtime.scope`), the OOD check (`runtime.ood`) and the shift warning
(`runtime.shift`) all read the same preprocessed batch: its pixel statistics and colour
descriptors (`ood.pixel_stats`), the feature map mean-pooled (`ood.pooled`), the gate's
thumbnails (`scope.thumbnails`) and the colour score against the OOD check's bank. A
request used to compute the pixel statistics twice (gate, then OOD check) and the colour
score twice (OOD check, then shift warning); `ImageStats` holds each once, and
`image_checks` gives the same answers as `OodDetector.check` followed by the shift warning
on its own statistics (tests/test_request_path.py; benchmarks/RESULTS.md, "Per-request
path").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from dermalens.preprocess import Preprocessing
from dermalens.runtime.ood import OodDetector, pixel_stats, pooled
from dermalens.runtime.scope import thumbnails
from dermalens.runtime.shift import ShiftFlag, ShiftMonitor, acquisition_stats

OodResult = tuple[np.ndarray, np.ndarray, list[str]]  # scores, not-skin flags, reasons


@dataclass
class ImageStats:
    """One preprocessed batch's statistics that more than one check reads, each computed
    on first use and then kept."""

    batch: np.ndarray  # N x 3 x H x W, preprocessed with `pre`
    fmap: np.ndarray  # the feature map of view 0 (`Predictor.forward`)
    pre: Preprocessing
    given_pixels: np.ndarray | None = None  # `pixel_stats` already computed (folder decoders)

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """`ood.pixel_stats`: the three pixel tests and the colour descriptor."""
        if self.given_pixels is not None:
            return self.given_pixels
        return pixel_stats(self.batch, self.pre)

    @functools.cached_property
    def features(self) -> np.ndarray:
        """`ood.pooled(fmap)`: N x C, the features the head, the gate and the OOD check read."""
        return pooled(self.fmap)

    @functools.cached_property
    def thumbs(self) -> np.ndarray:
        """The gate's `scope.thumbnails`."""
        return thumbnails(self.batch, self.pre)


def image_checks(
    ood: OodDetector | None,
    shift: ShiftMonitor | None,
    stats: ImageStats,
) -> tuple[OodResult | None, list[ShiftFlag] | None]:
    """(the OOD check's scores, flags and reasons or None, the shift warning per image or
    None) from one batch's statistics; the colour score is computed once for both."""
    result = colours = None
    if ood is not None:
        scores = ood.score(stats.features)
        colours = ood.colour_score(stats.pixels)
        not_skin, reasons = ood.decide(scores, colours, stats.pixels)
        result = (scores, not_skin, reasons)
    if shift is None:
        return result, None
    feature_scores = None if result is None else result[0]
    measured = acquisition_stats(stats.batch, stats.pre, feature_scores, colours)
    return result, shift.flags(measured)
