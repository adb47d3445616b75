"""The out-of-distribution check: its maths on synthetic features, its pixel tests on real
images, and its mechanics (fit, save, load, threshold) with the tiny random-init bundle."""

import shutil

import numpy as np
import pytest

from dermalens.bundle import BundleError, load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.evaluation.ood_fit import choose_threshold, choose_thresholds, fit_ood, save_ood
from dermalens.preprocess import Preprocessing, to_input
from dermalens.runtime.ood import (
    COLOUR_DIMS,
    MIN_COLOUR,
    OOD_FILE,
    PIXEL_STATS,
    OodDetector,
    colour_descriptor,
    load_ood,
    pixel_stats,
    pooled,
)
from dermalens.runtime.predictor import Predictor

skdata = pytest.importorskip("skimage.data")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "page")


def test_score_is_about_one_in_distribution_and_large_off_the_training_manifold():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 1, (3, 40))  # pooled features are non-negative, clustered
    labels = rng.integers(0, 3, 600)
    feats = centres[labels] + 0.05 * rng.normal(size=(600, 40))
    detector = fit_ood(feats[:400], k=10)
    held_out = detector.score(feats[400:])
    assert 0.8 < np.median(held_out) < 1.3
    odd = rng.uniform(0, 1, (10, 40))  # other directions in the same feature space
    assert detector.score(odd).min() > np.quantile(held_out, 0.99)
    assert np.allclose(detector.score(3 * feats[400:]), held_out, atol=1e-3)  # scale-free


def test_pixel_stats_separate_flat_noise_and_real_images(fixture_images):
    pre = Preprocessing(height=64, width=80)
    rng = np.random.default_rng(0)
    flat = np.full((64, 80, 3), (200, 150, 120), np.uint8)
    noise = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    real = [to_input(p, pre) for p in fixture_images]
    real += [to_input(getattr(skdata, name)(), pre) for name in PHOTOS]
    stats = pixel_stats(np.stack([to_input(flat, pre), to_input(noise, pre), *real]), pre)
    assert stats[0, 0] < 1 and abs(stats[1, 1]) < 0.1
    assert (stats[2:, 0] > 3).all() and (stats[2:, 1] > 0.5).all()  # no photo looks flat/noisy
    # colour spread: the skin fixtures and colour photos are far above the greyscale ones
    colour = dict(zip([p.name for p in fixture_images] + list(PHOTOS), stats[2:, 2]))
    grey = {"camera", "page"}
    assert all(colour[name] == pytest.approx(0, abs=0.5) for name in grey), colour
    assert all(v > 5 for name, v in colour.items() if name not in grey), colour
    assert stats[0, 2] == pytest.approx(80, abs=1)  # the flat frame is (200, 150, 120)


@pytest.fixture(scope="module")
def fitted(tiny_bundle, tiny_ham, tmp_path_factory):
    """The tiny bundle with an OOD check fitted on the tiny HAM set's features."""
    target = tmp_path_factory.mktemp("ood") / "bundle"
    shutil.copytree(tiny_bundle, target)
    bundle = load_bundle(target)
    predictor = Predictor(bundle, ood=False)
    table = load_dataset(tiny_ham).table
    batch = np.stack([predictor.prepare(p) for p in table["path"]])
    _, fmap = predictor.forward(batch)
    pixels = pixel_stats(batch, predictor.pre)
    detector = fit_ood(pooled(fmap), k=3, pixels=pixels)
    detector.threshold = choose_threshold(detector.score(pooled(fmap)), 0.99)
    detector.colour_threshold = choose_threshold(detector.colour_score(pixels), 0.99)
    save_ood(bundle, detector)
    bundle.save_description()
    return target, detector


def test_save_and_load_round_trip(fitted):
    target, detector = fitted
    loaded = load_ood(load_bundle(target))
    assert isinstance(loaded, OodDetector)
    assert loaded.threshold == detector.threshold == load_bundle(target).thresholds["ood_above"]
    x = np.random.default_rng(0).normal(size=(3, detector.bank.shape[1]))
    assert np.allclose(loaded.score(x), detector.score(x))
    assert loaded.colour_threshold == detector.colour_threshold
    pixels = np.random.default_rng(0).uniform(0, 1, (3, PIXEL_STATS))
    assert np.allclose(loaded.colour_score(pixels), detector.colour_score(pixels))


def test_colour_descriptor_is_a_unit_chromaticity_and_brightness_histogram():
    grey = np.full((3, 15, 20), 100.0)
    x = colour_descriptor(grey)
    assert x.shape == (COLOUR_DIMS,) and np.linalg.norm(x) == pytest.approx(1)
    chroma, light = x[:-8].reshape(12, 12), x[-8:]
    assert chroma[4, 4] > 0 and np.count_nonzero(chroma) == 1  # r = g = 1/3
    assert light[3] > 0 and np.count_nonzero(light) == 1  # brightness 100 of 255
    red = colour_descriptor(
        np.stack([np.full((15, 20), 250.0), np.zeros((15, 20)), np.zeros((15, 20))])
    )
    assert red[:-8].reshape(12, 12)[11, 0] > 0 and red[-1] > 0


def test_colour_judge_rejects_photos_whose_colours_are_far_from_skin(fitted, fixture_images):
    target, _ = fitted
    bundle = load_bundle(target)
    bundle.thresholds["ood_above"] = float("inf")  # the feature judge off: colours only
    predictor = Predictor(bundle)
    pixels = lambda image: pixel_stats(predictor.prepare(image)[None], predictor.pre)  # noqa: E731
    skin = [predictor.ood.colour_score(pixels(p))[0] for p in fixture_images]
    photos = [
        predictor.ood.colour_score(pixels(getattr(skdata, n)()))[0] for n in ("coffee", "rocket")
    ]
    assert min(photos) > 2 * max(skin), (photos, skin)  # fitted on 28 images of 7 lesions
    predictor.ood.colour_threshold = float(np.sqrt(min(photos) * max(skin)))
    for name in ("coffee", "rocket"):
        result = predictor.predict(getattr(skdata, name)())
        assert result.not_skin and result.triage == "not_skin", name
        assert "colours unlike dermoscopic images (colour score" in result.not_skin_reason
    assert not any(predictor.predict(p).not_skin for p in fixture_images)
    assert "or colour score >" in predictor.predict(fixture_images[0]).triage_rule


def test_predictor_flags_flat_frames_and_noise(fitted):
    predictor = Predictor(fitted[0])
    for image, reason in (
        (np.zeros((150, 200, 3), np.uint8), "flat frame"),
        (np.full((150, 200, 3), 255, np.uint8), "flat frame"),
        (np.random.default_rng(0).integers(0, 256, (150, 200, 3), dtype=np.uint8), "noise"),
        (skdata.camera(), "greyscale frame"),  # a black-and-white photo, 2-D array
        (np.repeat(skdata.chelsea().mean(axis=2, keepdims=True), 3, axis=2), "greyscale"),
    ):
        result = predictor.predict(image)
        assert result.not_skin and result.uncertain and result.triage == "not_skin"
        assert reason in result.not_skin_reason
    assert "not_skin" in predictor.predict(np.zeros((9, 9, 3), np.uint8)).triage_rule


def test_threshold_in_bundle_json_is_respected(fitted, fixture_images):
    target, _ = fitted
    score = Predictor(target).predict(fixture_images[0]).ood_score
    bundle = load_bundle(target)
    bundle.thresholds["ood_above"] = score * 0.99  # just below: rejected
    rejected = Predictor(bundle).predict(fixture_images[0])
    assert rejected.not_skin and "OOD score" in rejected.not_skin_reason
    bundle.thresholds["ood_above"] = score * 1.01  # just above: accepted
    accepted = Predictor(bundle).predict(fixture_images[0])
    assert not accepted.not_skin and accepted.triage != "not_skin"
    assert accepted.to_dict()["ood_score"] == pytest.approx(score)


def test_photos_get_finite_scores(fitted):
    # the tiny bundle is random-init, so only the mechanics are checked on photos here
    predictor = Predictor(fitted[0])
    scores = [predictor.predict(getattr(skdata, name)()).ood_score for name in PHOTOS]
    assert np.isfinite(scores).all()


def test_predictor_without_ood_file_has_no_score(tiny_bundle, fixture_images):
    result = Predictor(tiny_bundle).predict(fixture_images[0])
    assert result.ood_score is None and result.not_skin is False


def test_tampered_ood_file_is_refused(fitted, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(fitted[0], target)
    data = bytearray((target / OOD_FILE).read_bytes())
    data[-10] ^= 0xFF
    (target / OOD_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="content hash does not match"):
        Predictor(target)


def test_old_format_is_refused_with_what_to_do():
    import io

    buffer = io.BytesIO()
    np.savez(buffer, format=np.array(1), mean=np.zeros(3))
    with pytest.raises(BundleError, match="format 1 is not 2; re-run `dermalens calibrate`"):
        OodDetector.from_bytes(buffer.getvalue())


def test_a_file_from_before_the_colour_test_loads_with_its_default(fitted):
    import io

    target, detector = fitted
    values = {n: getattr(detector, n) for n in ("bank", "k", "scale", "threshold")}
    buffer = io.BytesIO()
    np.savez(buffer, format=np.array(2), **{k: np.asarray(v) for k, v in values.items()})
    loaded = OodDetector.from_bytes(buffer.getvalue())
    assert loaded.min_colour == MIN_COLOUR and loaded.threshold == detector.threshold
    buffer = io.BytesIO()
    np.savez(buffer, format=np.array(2), bank=detector.bank, k=np.asarray(3))
    with pytest.raises(BundleError, match=r"OOD file lacks \['scale', 'threshold'\]"):
        OodDetector.from_bytes(buffer.getvalue())


def test_threshold_pair_catches_the_most_probes_then_rejects_the_fewest_skin_images():
    rng = np.random.default_rng(0)
    val_f, val_c = rng.uniform(0, 1, 1000), rng.uniform(0, 1, 1000)
    # probe 0 needs a low feature threshold, probe 1 a low colour threshold, probe 2 is
    # caught by a pixel test, probe 3 by nothing on the grid
    probe_f = np.array([np.quantile(val_f, 0.992), 0.1, 0.1, 0.1])
    probe_c = np.array([0.1, np.quantile(val_c, 0.982), 0.1, 0.1])
    pixel = np.array([False, False, True, False])
    limit, colour_limit, report = choose_thresholds(
        val_f, val_c, probe_f, probe_c, pixel, (0.99, 0.995, 0.999), (0.98, 0.99)
    )
    chosen = report["chosen"]
    assert (chosen["quantile"], chosen["colour_quantile"]) == (0.99, 0.98)
    assert chosen["probes_caught"] == 3 and len(report["grid"]) == 6
    assert limit == pytest.approx(np.quantile(val_f, 0.99))
    assert colour_limit == pytest.approx(np.quantile(val_c, 0.98))
    # when no pair catches more probes than another, the fewest skin rejects win
    _, _, report = choose_thresholds(
        val_f, val_c, probe_f * 0, probe_c * 0, pixel, (0.99, 0.999), (0.98, 0.995)
    )
    assert (report["chosen"]["quantile"], report["chosen"]["colour_quantile"]) == (0.999, 0.995)
    with pytest.raises(ValueError, match="empty quantile grid"):
        choose_thresholds(val_f, val_c, probe_f, probe_c, pixel, (), (0.99,))


def test_threshold_pair_keeps_under_the_validation_reject_cap():
    rng = np.random.default_rng(0)
    val_f, val_c = rng.uniform(0, 1, 1000), rng.uniform(0, 1, 1000)
    # the probe is caught only by the 98% colour quantile, which with the 99% feature
    # quantile turns away about 3% of skin images
    probe_f, probe_c = np.array([0.1]), np.array([np.quantile(val_c, 0.982)])
    pixel = np.array([False])
    grid = ((0.99, 0.999), (0.98, 0.995))
    _, _, free = choose_thresholds(val_f, val_c, probe_f, probe_c, pixel, *grid)
    assert free["chosen"]["probes_caught"] == 1 and free["chosen"]["val_rejected"] > 0.02
    _, colour_limit, capped = choose_thresholds(
        val_f, val_c, probe_f, probe_c, pixel, *grid, max_val_reject=0.02
    )
    assert capped["cap_met"] and capped["chosen"]["val_rejected"] <= 0.02
    assert capped["chosen"]["probes_caught"] == 0  # the probe is given up, not the skin
    assert (capped["chosen"]["quantile"], capped["chosen"]["colour_quantile"]) == (0.999, 0.995)
    assert colour_limit == pytest.approx(np.quantile(val_c, 0.995))
    # a cap no pair meets: the fewest skin rejects, and the report says so
    _, _, unmet = choose_thresholds(
        val_f, val_c, probe_f, probe_c, pixel, *grid, max_val_reject=0.001
    )
    assert not unmet["cap_met"] and unmet["chosen"]["val_rejected"] == min(
        g["val_rejected"] for g in unmet["grid"]
    )
    with pytest.raises(ValueError, match=r"max_val_reject must lie in \[0, 1\], got 2"):
        choose_thresholds(val_f, val_c, probe_f, probe_c, pixel, *grid, max_val_reject=2)


def test_validation_images_the_pixel_tests_reject_count_against_the_cap():
    rng = np.random.default_rng(0)
    val_f, val_c = rng.uniform(0, 1, 1000), rng.uniform(0, 1, 1000)
    probe_f, probe_c, pixel = np.array([0.1]), np.array([0.1]), np.array([False])
    grid = ((0.99, 0.999), (0.98, 0.995))
    # 2.5% of the skin images fail a pixel test: no pair can keep under a 2% cap
    val_pixel = np.zeros(1000, bool)
    val_pixel[:25] = True
    _, _, plain = choose_thresholds(
        val_f, val_c, probe_f, probe_c, pixel, *grid, max_val_reject=0.02
    )
    assert plain["cap_met"]
    _, _, flagged = choose_thresholds(
        val_f, val_c, probe_f, probe_c, pixel, *grid, 0.02, val_pixel_caught=val_pixel
    )
    assert not flagged["cap_met"]
    assert all(g["val_rejected"] >= 0.025 for g in flagged["grid"])
    with pytest.raises(ValueError, match="1000 validation scores but 999 pixel flags"):
        choose_thresholds(
            val_f, val_c, probe_f, probe_c, pixel, *grid, val_pixel_caught=val_pixel[1:]
        )


def test_decide_on_precomputed_scores_matches_check(fitted):
    _, detector = fitted
    feats = np.random.default_rng(0).normal(size=(4, detector.bank.shape[1]))
    pixels = np.tile(np.asarray([40.0, 0.9, 30.0] + [0.1] * (PIXEL_STATS - 3)), (len(feats), 1))
    pixels[0, 0] = 0.0  # a flat frame
    scores, flags, reasons = detector.check(feats, pixels)
    again = detector.decide(scores, detector.colour_score(pixels), pixels)
    assert flags.tolist() == again[0].tolist() and reasons == again[1]
    assert reasons[0].startswith("flat frame")
    with pytest.raises(ValueError, match="must describe the same images"):
        detector.decide(scores[1:], None, pixels)


def test_mismatched_colour_inputs_are_refused_with_the_reason(fitted):
    _, detector = fitted
    with pytest.raises(ValueError, match="OOD fit: 12 feature rows but 11 pixel rows"):
        fit_ood(np.ones((12, 4)), k=3, pixels=np.ones((11, PIXEL_STATS)))
    with pytest.raises(BundleError, match="colour dimensions but this version computes 10"):
        detector.colour_score(np.ones((2, 13)))


def test_too_few_fit_images_is_an_error():
    with pytest.raises(ValueError, match="at least k \\+ 2"):
        fit_ood(np.ones((5, 4)), k=10)


def test_unreadable_ood_file_says_so():
    with pytest.raises(BundleError, match="not a readable OOD file"):
        OodDetector.from_bytes(b"not an npz")


def test_scoring_from_parallel_threads_restores_the_blas_threads():
    """The one-thread BLAS limit of small OOD queries is process-wide; parallel requests
    must neither break the scores nor leave BLAS limited afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    from dermalens.runtime.ood import knn_distance, unit_rows

    rng = np.random.default_rng(0)
    bank = unit_rows(rng.random((300, 64), dtype=np.float32))
    queries = [unit_rows(rng.random((n, 64), dtype=np.float32)) for n in (1, 5, 32) * 20]
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(lambda q: knn_distance(q, bank, 3), queries))
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert after == before
    for q, got in zip(queries, scores):
        sims = np.sort(q @ bank.T, axis=1)[:, -3]
        np.testing.assert_allclose(got, 1 - sims, atol=1e-5)
