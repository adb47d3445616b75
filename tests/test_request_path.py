"""The per-request path computes each statistic once and gives the same answers as before.

`Router.predict` now shares one `ImageStats` (pixel statistics, pooled features,
thumbnails) between the scope gate, the OOD check and the shift warning, and scores the
colours once. `reference_predict` below is the path as it was (each check computing its
own statistics, `OodDetector.check`, then the shift warning scoring the colours again); both
must give the same
`Prediction` on real images, and the faster median of the shift statistics must equal
`np.median`.

nice -n 5 pytest tests/test_request_path.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermalens.runtime.checks import ImageStats, image_checks
from dermalens.runtime.explain import cam_grid, upsample
from dermalens.runtime.ood import pixel_stats, pooled
from dermalens.runtime.router import Router
from dermalens.runtime.scope import thumbnails
from dermalens.runtime.shift import ShiftMonitor, _median, acquisition_stats
from dermalens.serve.app import load_router
from dermalens.serve.inference import RecentShifts
from dermalens.serve.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"
IMAGES = (
    sorted((FIXTURES / "ham").glob("*.jpg"))[:4]
    + sorted((FIXTURES / "pad" / "images").glob("*.png"))[:2]
)


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.installed()


def reference_shift(feature, x, ood_scores, pixels):
    """The shift warning as `Predictor.shift_check` gave it: its own colour scores."""
    colours = feature.ood.colour_score(pixels)
    return feature.shift.flags(acquisition_stats(x, feature.pre, ood_scores, colours))


def reference_predict(router: Router, path: Path, explain: bool):
    """`Router.predict` (no patient data, no TTA) as it was before `ImageStats`."""
    feature = router.feature
    x = feature.prepare(path)[None]
    logits, fmap = feature.forward(x, feature.meta_vector(), False)
    pre = feature.pre
    scene = router.gate.scene_features(x)
    decision = router.gate.decide(pooled(fmap), pixel_stats(x, pre), thumbnails(x, pre), scene)[0]
    target = router.target(decision)
    if not isinstance(target, type(feature)):
        target.source = str(path)
        return target
    if target is not feature:
        result = target.predict(path, 3, explain, tta=False)
        result.source = str(path)
        return router.answered(result, decision, target)
    probs = feature.calibrated(logits)[0]
    pixels = pixel_stats(x, pre)
    ood = feature.ood.check(pooled(fmap), pixels)
    shift = reference_shift(feature, x, ood[0], pixels)
    result = feature.result(probs, 3, str(path), float(ood[0][0]), ood[2][0], shift[0])
    if explain:
        index = int(feature.decide(probs[None])[0])
        result.heatmap_grid = cam_grid(fmap[0], feature.engine.head()[0], index)
        result.heatmap = upsample(result.heatmap_grid, (pre.height, pre.width))
    result.tta = False
    return router.answered(result, decision, target)


def same(a, b) -> None:
    left, right = a.to_dict(heatmap=True), b.to_dict(heatmap=True)
    left.pop("timings_ms"), right.pop("timings_ms")
    assert json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)
    for name in ("heatmap", "heatmap_grid"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_router_predict_gives_the_prediction_of_the_old_path(router, path):
    for explain in (True, False):
        new, old = router.predict(path, 3, explain), reference_predict(router, path, explain)
        same(new, old)
        assert new.status == old.status and new.scope == old.scope
        assert new.ood_score == old.ood_score and new.shift == old.shift


def test_a_flat_frame_and_noise_give_the_old_answers(router, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    for i, image in enumerate((Image.new("RGB", (200, 150), (90, 60, 50)), Image.fromarray(noise))):
        image.save(path := tmp_path / f"probe{i}.png")
        new = router.predict(path, 3, True)
        assert new.status == "not_skin"
        same(new, reference_predict(router, path, True))


def test_image_checks_equal_the_separate_checks(router, monkeypatch):
    feature = router.feature
    x = np.stack([feature.prepare(p) for p in IMAGES])
    _, fmap = feature.forward(x)
    measured = []  # the statistics the shift warning judges, not only its flags
    flags_of = ShiftMonitor.flags
    monkeypatch.setattr(ShiftMonitor, "flags", lambda m, s: measured.append(s) or flags_of(m, s))
    stats = ImageStats(x, fmap, feature.pre)
    (scores, flags, reasons), shift = image_checks(feature.ood, feature.shift, stats)
    pixels = pixel_stats(x, feature.pre)
    old_scores, old_flags, old_reasons = feature.ood.check(pooled(fmap), pixels)
    assert np.array_equal(scores, old_scores) and np.array_equal(flags, old_flags)
    assert reasons == old_reasons
    assert shift == reference_shift(feature, x, old_scores, pixels)
    assert feature.ood_check(x, fmap)[2] == old_reasons
    assert np.array_equal(measured[0], measured[1], equal_nan=True)
    assert not np.isnan(measured[0][:, -2:]).any()  # both OOD columns were filled in
    assert np.array_equal(stats.pixels, pixel_stats(x, feature.pre))
    assert np.array_equal(stats.thumbs, thumbnails(x, feature.pre))
    given = ImageStats(x, fmap, feature.pre, stats.pixels)
    assert given.pixels is stats.pixels  # a folder's decoders already computed them


def test_the_shift_median_equals_numpy():
    rng = np.random.default_rng(0)
    for size in (*range(1, 12), 29304, 29305):
        for dtype in (np.float32, np.float64):
            values = np.abs(rng.standard_normal(size)).astype(dtype)
            values[: size // 3] = np.round(values[: size // 3])  # ties, as pixel values have
            got, want = _median(values), np.median(values)
            assert got == want and got.dtype == want.dtype, (size, dtype)


def test_acquisition_stats_of_an_image_are_unchanged(router):
    """The noise column (log of the median absolute Laplacian), recomputed with np.median."""
    x = router.feature.prepare(IMAGES[0])[None]
    pre = router.feature.pre
    std, mean = (np.asarray(v, np.float32)[:, None, None] for v in (pre.std, pre.mean))
    rgb = np.clip(x[0] * std + mean, 0, 255)
    grey = rgb.mean(axis=0)
    lap = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    assert acquisition_stats(x, pre)[0, 6] == np.log1p(np.median(np.abs(lap)))


def test_recent_shifts_keeps_each_batch_test(router):
    monitor: ShiftMonitor = router.feature.shift
    recent = RecentShifts(monitor, 12)
    flags: list[bool] = []
    for i in range(30):
        flagged = i % 3 == 0 or 10 <= i < 16
        flags.append(flagged)
        got = recent.add(flagged)
        want = monitor.batch_warning(flags[-12:])
        assert got.model_dump() == want
    assert len(recent.tests) <= 12 * 13


@pytest.mark.parametrize("value", [None, "true"])
def test_the_service_lets_onnx_runtime_threads_sleep_unless_told(value, monkeypatch, tmp_path):
    if value is not None:
        monkeypatch.setenv("DERMALENS_SPINNING", value)
    settings = Settings(data_dir=tmp_path)
    assert load_router(settings).feature.engine.spinning is (value == "true")
