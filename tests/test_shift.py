"""The shift warning: acquisition statistics, bands fitted on validation, batch test."""

from __future__ import annotations

import numpy as np
import pytest

from dermalens.evaluation.corruptions import apply
from dermalens.evaluation.shift_fit import fit_shift
from dermalens.preprocess import Preprocessing, normalise
from dermalens.runtime.shift import STATS, ShiftMonitor, acquisition_stats

PRE = Preprocessing(height=48, width=64)


def skin_like(seed: int):
    """A textured skin-coloured frame with a darker blob, a little different every seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.array([200, 150, 130]) * rng.uniform(0.9, 1.1)
    yy, xx = np.mgrid[0:48, 0:64]
    blob = ((yy - 24) ** 2 + (xx - 32) ** 2) < rng.uniform(60, 140)
    pixels = base + rng.normal(0, 6, (48, 64, 3))
    pixels[blob] *= 0.55
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def stats_of(images) -> np.ndarray:
    return acquisition_stats(np.stack([normalise(im, PRE) for im in images]), PRE)


@pytest.fixture(scope="module")
def monitor() -> ShiftMonitor:
    return fit_shift(stats_of([skin_like(i) for i in range(200)]), target=0.05)


def test_fit_flags_at_most_the_target_share_of_validation(monitor):
    assert 0 <= monitor.expected <= 0.05 and monitor.level > 0
    assert np.isnan(monitor.low[STATS.index("ood_score")])  # no OOD scores given: unused


def test_clean_images_pass_and_shifted_ones_are_flagged_with_the_reason(monitor):
    clean = stats_of([skin_like(1000 + i) for i in range(50)])
    flags, _ = monitor.check(clean)
    assert flags.mean() <= 0.2
    bright = stats_of([apply(skin_like(2000 + i), "brightness", 5) for i in range(10)])
    flags, reasons = monitor.check(bright)
    assert flags.all()
    assert all("brightness high" in r for r in reasons)
    framed = stats_of([apply(skin_like(3000 + i), "zoom_out", 4) for i in range(10)])
    flags, reasons = monitor.check(framed)
    assert flags.all() and all("dark_border high" in r for r in reasons)


def test_batch_warning_needs_clearly_more_flags_than_validation(monitor):
    assert not monitor.batch_warning(np.zeros(40, bool))["shifted"]
    assert not monitor.batch_warning(np.ones(5, bool))["shifted"]  # too few images
    warned = monitor.batch_warning(np.r_[np.ones(20, bool), np.zeros(20, bool)])
    assert warned["shifted"] and "differ from the data" in warned["message"]


def test_reference_round_trips_through_the_bundle_thresholds(monitor):
    class FakeBundle:
        thresholds = {"shift": monitor.to_dict()}

    again = ShiftMonitor.of(FakeBundle())
    np.testing.assert_allclose(again.low, monitor.low)
    np.testing.assert_allclose(again.high, monitor.high)
    assert "validation images" in monitor.to_dict()["rule"]


def test_fit_refuses_too_few_images_and_a_bad_target():
    few = stats_of([skin_like(i) for i in range(5)])
    with pytest.raises(ValueError, match="5 validation images: too few"):
        fit_shift(few)
    with pytest.raises(ValueError, match="shift target must lie between 0 and 1"):
        fit_shift(few, target=1.5)


def test_fine_detail_falls_when_a_smaller_source_is_enlarged_to_the_input():
    from PIL import Image

    col = STATS.index("fine_detail")
    full = [skin_like(4000 + i) for i in range(10)]
    small = [im.resize((51, 38), Image.BILINEAR) for im in full]  # prepare() enlarges it back
    sharp, enlarged = stats_of(full)[:, col], stats_of(small)[:, col]
    assert np.isfinite(sharp).all() and (enlarged < sharp - 0.5).all()
    blurred = stats_of([apply(im, "gaussian_blur", 3) for im in full])[:, col]
    assert (blurred < sharp).all()
