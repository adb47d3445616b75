"""Model variants (optimised fp32, int8, bf16): correctness, never timing.

Each shipped variant must still agree with the fp32 model on the fixture images at least
as well as its recorded threshold; a rejected or altered variant is never served; the
graph rewrites and the lean input path leave the numbers unchanged.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from lowprec import Int8Config

from conftest import DEFAULT_MODEL, make_tiny_ham
from dermalens.bundle import ONNX, BundleError, load_bundle
from dermalens.export.variants import agreement, export_variant
from dermalens.runtime.engines import OnnxEngine
from dermalens.runtime.selection import (
    FILES,
    accepted_variants,
    make_engine,
    select_variant,
    variant_engine,
)


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory):
    """Flipped / re-toned copies of the fixture images: never the evaluation images."""
    root = make_tiny_ham(tmp_path_factory.mktemp("calib") / "ham", copies=3)
    return sorted((root / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def variant_bundle(tiny_bundle, calib_images, fixture_images, tmp_path_factory):
    path = tmp_path_factory.mktemp("variants") / "tiny"
    shutil.copytree(tiny_bundle, path)
    for precision in ("fp32", "int8", "bf16"):
        export_variant(path, precision, calib_images, fixture_images, measure_speed=False)
    return path


def shipped_bundles(variant_bundle):
    """The test's own bundle, and the bundled default model if it ships variants."""
    description = DEFAULT_MODEL / "bundle.json"
    shipped = description.is_file() and json.loads(description.read_text()).get("variants")
    return [variant_bundle, DEFAULT_MODEL] if shipped else [variant_bundle]


def test_records_every_variant(variant_bundle):
    variants = load_bundle(variant_bundle).info["variants"]
    assert set(variants) == {"fp32", "int8", "bf16"}
    for precision, rec in variants.items():
        assert rec["images"] == 7
        assert rec["threshold"] == {"top1_agreement": 0.99, "max_abs_prob_diff": 0.02}
        assert rec["accepted"] == (
            rec["top1_agreement"] >= 0.99 and rec["max_abs_prob_diff"] <= 0.02
        ), precision
    int8 = variants["int8"]
    assert int8["config"]["per_channel"] and int8["config"]["format"] == "qdq"
    assert any("Gemm" in name for name in int8["kept_fp32"])  # the head stays in float
    assert int8["calibration_images"] == 21


def test_shipped_variants_hold_their_threshold(variant_bundle, fixture_images):
    for path in shipped_bundles(variant_bundle):
        bundle = load_bundle(path)
        reference = OnnxEngine(bundle)
        for precision, rec in accepted_variants(bundle).items():
            engine = variant_engine(bundle, precision)
            if rec["engine"] == "onnxruntime":
                assert [o.name for o in engine.session.get_outputs()][:2] == [
                    "logits",
                    "features",
                ]
            result = agreement(bundle, reference, engine, fixture_images)
            limits = rec["threshold"]
            assert result.top1_agreement >= limits["top1_agreement"], (path, precision)
            assert result.max_abs_prob_diff <= limits["max_abs_prob_diff"], (path, precision)


def test_optimised_fp32_gives_the_same_answers(variant_bundle, fixture_images):
    bundle = load_bundle(variant_bundle)
    result = agreement(bundle, OnnxEngine(bundle), variant_engine(bundle, "fp32"), fixture_images)
    assert result.top1_agreement == 1.0 and result.max_abs_prob_diff < 1e-5


def test_rejected_variant_is_never_served(variant_bundle, calib_images, fixture_images, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    rec = export_variant(
        path, "int8", calib_images, fixture_images, top1_min=1.01, measure_speed=False
    )
    assert not rec["accepted"] and "sha256" not in rec
    assert not (path / FILES["int8"]).exists()  # the earlier accepted file is gone too
    bundle = load_bundle(path)
    assert "int8" not in accepted_variants(bundle)
    assert select_variant(bundle, "auto") != "int8"
    with pytest.raises(BundleError, match="int8 variant was rejected"):
        make_engine(bundle, precision="int8")


def test_altered_variant_file_is_not_served(variant_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    with open(path / FILES["fp32"], "ab") as fh:
        fh.write(b"\0")
    bundle = load_bundle(path)
    assert "fp32" not in accepted_variants(bundle)
    with pytest.raises(BundleError, match="missing or changed file"):
        select_variant(bundle, "fp32")


def test_auto_precision_serves_an_accepted_variant_or_the_plain_model(variant_bundle):
    bundle = load_bundle(variant_bundle)
    chosen = select_variant(bundle, "auto")
    assert chosen is None or chosen in accepted_variants(bundle)
    engine = make_engine(bundle, precision="auto")
    if chosen is None:
        assert isinstance(engine, OnnxEngine)
    with pytest.raises(ValueError, match="precision 'int4'"):
        select_variant(bundle, "int4")


def test_calibration_and_evaluation_images_must_differ(tiny_bundle, fixture_images):
    with pytest.raises(ValueError, match="held-out"):
        export_variant(tiny_bundle, "int8", fixture_images[:3], fixture_images)


def test_int8_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="calibration 'kl'"):
        Int8Config(calibration="kl")
    with pytest.raises(ValueError, match=r"\['neck'\]"):
        Int8Config(keep_fp32=("stem", "neck"))


def test_frozen_pads_keep_the_numbers(tmp_path):
    """TF-style 'same' padding (EfficientNet-Lite) becomes constant pads fused into Conv."""
    import onnx
    import onnxruntime as ort
    import torch
    from timm.layers import Conv2dSame

    from dermalens.export.graph import freeze_pads, optimise_onnx

    net = torch.nn.Sequential(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 3, stride=2))
    src = tmp_path / "same.onnx"
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, 3, 15, 20),),
        str(src),
        input_names=["image"],
        output_names=["out"],
        dynamic_axes={"image": {0: "batch"}, "out": {0: "batch"}},
        dynamo=False,
    )
    assert freeze_pads(src, tmp_path / "frozen.onnx", 15, 20) == 2
    frozen = onnx.load(str(tmp_path / "frozen.onnx"))
    assert not [n for n in frozen.graph.node if n.op_type == "Shape"]
    optimise_onnx(src, tmp_path / "opt.onnx", 15, 20)
    assert not [n for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node if n.op_type == "Pad"]
    x = np.random.default_rng(0).normal(size=(3, 3, 15, 20)).astype(np.float32)
    outs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})
        for p in (src, tmp_path / "frozen.onnx", tmp_path / "opt.onnx")
    ]
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-6)
    np.testing.assert_allclose(outs[2][0], outs[0][0], atol=1e-5)


def test_lean_input_path_is_bit_identical(tiny_bundle, fixture_images):
    from dermalens.imageio import load_image
    from dermalens.preprocess import resize, to_input
    from dermalens.runtime.folder import normalise_into

    pre = load_bundle(tiny_bundle).preprocessing
    out = np.empty((3, pre.height, pre.width), np.float32)
    for path in fixture_images:
        image = load_image(path, draft_size=(pre.width, pre.height))
        normalise_into(resize(image, pre), pre, out)
        assert np.array_equal(out, to_input(path, pre))


def test_normalise_fast_is_bit_identical(fixture_images):
    from lowprec import normalise_fast

    from dermalens.imageio import load_image
    from dermalens.preprocess import Preprocessing, normalise

    odd = Preprocessing(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    for pre in (Preprocessing(), odd):
        for path in fixture_images:
            image = load_image(path)
            fast = normalise_fast(image, pre)
            assert fast.flags.c_contiguous and np.array_equal(fast, normalise(image, pre))


def test_predict_folder_streams_in_order(tiny_bundle, fixture_images, tmp_path):
    from dermalens.runtime.folder import predict_folder
    from dermalens.runtime.predictor import Predictor

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    files = [*fixture_images[:3], bad, *fixture_images[3:]]
    predictor = Predictor(tiny_bundle)
    items = list(predict_folder(predictor, files, batch_size=3, prefetch=1, progress=False))
    assert [i.path for i in items] == files
    assert items[3].prediction is None and "broken.jpg" in items[3].error
    for item in items[:3] + items[4:]:
        expected = predictor.predict(item.path)
        assert item.error == "" and item.prediction.source == str(item.path)
        np.testing.assert_allclose(item.prediction.probabilities, expected.probabilities, atol=1e-6)
        assert item.prediction.triage == expected.triage


def test_predict_folder_stops_early_without_hanging(tiny_bundle, fixture_images):
    from dermalens.runtime.folder import predict_folder
    from dermalens.runtime.predictor import Predictor

    stream = predict_folder(
        Predictor(tiny_bundle), fixture_images * 4, batch_size=2, progress=False
    )
    first = next(stream)
    stream.close()  # the producer thread must notice and end
    assert first.prediction is not None


def test_plain_model_is_untouched_by_variants(variant_bundle):
    bundle = load_bundle(variant_bundle)  # verifies the hashes of model.pt and model.onnx
    assert bundle.has(ONNX) and bundle.info["onnx_sha256"]


def test_export_variants_on_a_split(tiny_bundle, calib_images, tmp_path):
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import grouped_split, save_split
    from dermalens.export.variants import export_variants

    data = calib_images[0].parents[1]
    split = grouped_split(load_dataset(data), (0.5, 0.1, 0.4))
    save_split(split, tmp_path / "split.csv")
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle, path)
    records = export_variants(
        path, ["fp32"], data, tmp_path / "split.csv", calib=4, measure_speed=False
    )
    rec = records["fp32"]
    assert rec["images"] == int((split["split"] == "test").sum())
    assert rec["accepted"] and rec["balanced_accuracy"] == rec["reference_balanced_accuracy"]
    assert load_bundle(path).info["variants"]["fp32"]["sha256"] == rec["sha256"]


def test_auto_picks_the_fastest_accepted_variant(variant_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    bundle = load_bundle(path)
    variants = bundle.info["variants"]
    for rec in variants.values():  # pretend all agree; speeds as measured at export
        rec.update(accepted=True, reference_images_per_s=250.0)
    variants["fp32"]["images_per_s"] = 300.0
    variants["bf16"]["images_per_s"] = 120.0
    variants["int8"]["images_per_s"] = 420.0
    if "sha256" not in variants["int8"]:  # the tiny int8 was rejected: no file to serve
        assert select_variant(bundle) == "fp32"
        return
    assert select_variant(bundle) == "int8"
    variants["int8"]["accepted"] = False
    assert select_variant(bundle) == "fp32"
    variants["fp32"]["images_per_s"] = 240.0  # no faster than the plain model.onnx
    assert select_variant(bundle) is None
