"""The optimised fp32 variant (`model.opt.onnx`): correctness and selection, never timing.

The one variant the library builds must agree with the plain model on the fixture images
at least as well as its recorded threshold; a rejected, altered or no faster variant is
never served; the graph rewrites and the lean input path leave the numbers unchanged.
Speeds are faked (`throughput` patched) so selection is tested without timing anything.
int8 and bf16 left the library (benchmarks/lowprec.py); asking for them is an error.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import dermalens.export.variants as variants_module
from conftest import DEFAULT_MODEL, make_tiny_ham
from dermalens.bundle import ONNX, load_bundle
from dermalens.errors import VariantRejected
from dermalens.export.variants import agreement, export_variant, export_variants
from dermalens.files import sha256
from dermalens.runtime.engines import OnnxEngine
from dermalens.runtime.selection import VARIANT, VARIANT_FILE, accepted_variant, make_engine

FAKE_SPEED = {"variant": 300.0, "plain": 200.0}  # images/s "measured" at export


def fake_throughput(engine, bundle, batch: int = 32, seconds: float = 2.0) -> float:
    """The staged variant is "faster" than the plain model; nothing is timed."""
    return FAKE_SPEED["variant" if engine.model_path.endswith(VARIANT_FILE) else "plain"]


def export_with_fake_speed(path, images, **kwargs) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(variants_module, "throughput", fake_throughput)
        return export_variant(path, images, **kwargs)


def variant_engine(bundle) -> OnnxEngine:
    return OnnxEngine(bundle, path=str(bundle.file(VARIANT_FILE)))


def served_file(engine) -> str:
    return engine.model_path.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def variant_bundle(tiny_bundle, fixture_images, tmp_path_factory):
    path = tmp_path_factory.mktemp("variants") / "tiny"
    shutil.copytree(tiny_bundle, path)
    export_with_fake_speed(path, fixture_images)
    return path


def shipped_bundles(variant_bundle):
    """The test's own bundle, and the bundled default model if it ships variants."""
    description = DEFAULT_MODEL / "bundle.json"
    shipped = description.is_file() and json.loads(description.read_text()).get("variants")
    return [variant_bundle, DEFAULT_MODEL] if shipped else [variant_bundle]


def test_records_the_variant(variant_bundle):
    variants = load_bundle(variant_bundle).info["variants"]
    assert set(variants) == {"fp32"}
    for precision, rec in variants.items():
        assert rec["images"] == 7
        assert rec["threshold"] == {"top1_agreement": 0.99, "max_abs_prob_diff": 0.02}
        assert rec["accepted"] == (
            rec["top1_agreement"] >= 0.99 and rec["max_abs_prob_diff"] <= 0.02
        ), precision


def test_accepted_variant_is_recorded_with_hash_and_speed_and_served(variant_bundle):
    bundle = load_bundle(variant_bundle)
    rec = bundle.info["variants"][VARIANT]
    assert rec["accepted"] and rec["file"] == VARIANT_FILE
    assert rec["sha256"] == sha256(bundle.file(VARIANT_FILE))
    assert rec["images_per_s"] == 300.0 and rec["reference_images_per_s"] == 200.0
    assert rec["measured_on"] and rec["size_bytes"] == bundle.file(VARIANT_FILE).stat().st_size
    assert accepted_variant(bundle) == rec
    engine = make_engine(bundle, precision="auto")
    assert isinstance(engine, OnnxEngine) and served_file(engine) == VARIANT_FILE
    assert served_file(make_engine(bundle, precision="fp32")) == ONNX  # fp32: the plain model


def test_shipped_variants_hold_their_threshold(variant_bundle, fixture_images):
    for path in shipped_bundles(variant_bundle):
        bundle = load_bundle(path)
        reference = OnnxEngine(bundle)
        rec = accepted_variant(bundle)
        if rec is None:
            continue
        engine = variant_engine(bundle)
        assert [o.name for o in engine.session.get_outputs()][:2] == ["logits", "features"]
        result = agreement(bundle, reference, engine, fixture_images)
        limits = rec["threshold"]
        assert result.top1_agreement >= limits["top1_agreement"], path
        assert result.max_abs_prob_diff <= limits["max_abs_prob_diff"], path


def test_optimised_fp32_gives_the_same_answers(variant_bundle, fixture_images):
    bundle = load_bundle(variant_bundle)
    result = agreement(bundle, OnnxEngine(bundle), variant_engine(bundle), fixture_images)
    assert result.top1_agreement == 1.0 and result.max_abs_prob_diff < 1e-5


@pytest.mark.parametrize("limit", [{"top1_min": 1.01}, {"max_prob_diff": -1.0}])
def test_rejected_variant_is_recorded_removed_and_never_served(
    variant_bundle, fixture_images, tmp_path, limit
):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    assert (path / VARIANT_FILE).exists()  # the earlier accepted file
    with pytest.raises(VariantRejected) as caught:
        export_with_fake_speed(path, fixture_images, **limit)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("on 7 held-out images")
    assert "the fp32 variant was not kept: top-1 agreement" in message
    expected = "(needs >= 1.01)" if "top1_min" in limit else "(needs <= -1.0)"
    assert expected in message
    rec = load_bundle(path).info["variants"][VARIANT]
    assert not rec["accepted"] and "sha256" not in rec and "images_per_s" not in rec
    assert rec["threshold"] == {
        "top1_agreement": limit.get("top1_min", 0.99),
        "max_abs_prob_diff": limit.get("max_prob_diff", 0.02),
    }
    assert not (path / VARIANT_FILE).exists()  # the earlier accepted file is gone too
    bundle = load_bundle(path)
    assert accepted_variant(bundle) is None
    assert served_file(make_engine(bundle, precision="auto")) == ONNX


def test_altered_variant_file_is_not_served(variant_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    assert accepted_variant(load_bundle(path)) is not None
    with open(path / VARIANT_FILE, "ab") as fh:
        fh.write(b"\0")
    bundle = load_bundle(path)
    assert accepted_variant(bundle) is None
    assert served_file(make_engine(bundle, precision="auto")) == ONNX


def test_auto_precision_serves_an_accepted_variant_or_the_plain_model(variant_bundle):
    bundle = load_bundle(variant_bundle)
    chosen = accepted_variant(bundle)
    engine = make_engine(bundle, precision="auto")
    assert isinstance(engine, OnnxEngine)
    assert served_file(engine) == (ONNX if chosen is None else VARIANT_FILE)
    with pytest.raises(ValueError, match="precision 'int4'"):
        make_engine(bundle, precision="int4")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_int8_and_bf16_are_not_built(variant_bundle, tmp_path, precision):
    bundle = load_bundle(variant_bundle)
    with pytest.raises(ValueError, match=f"precision '{precision}'") as caught:
        make_engine(bundle, precision=precision)
    assert "builds no int8 or bf16 variant" in str(caught.value)
    with pytest.raises(ValueError, match="int8 and bf16 never met the agreement bar"):
        export_variants(variant_bundle, [precision], tmp_path, tmp_path / "split.csv")


def test_export_variant_needs_held_out_images(tiny_bundle):
    with pytest.raises(ValueError, match="held-out"):
        export_variant(tiny_bundle, [])


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


def test_export_variants_on_a_split(tiny_bundle, tmp_path):
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import grouped_split, save_split

    data = make_tiny_ham(tmp_path / "ham", copies=3)
    split = grouped_split(load_dataset(data), (0.5, 0.1, 0.4))
    save_split(split, tmp_path / "split.csv")
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle, path)
    records = export_variants(path, ["fp32"], data, tmp_path / "split.csv", measure_speed=False)
    rec = records["fp32"]
    assert rec["images"] == int((split["split"] == "test").sum())
    assert rec["accepted"] and rec["balanced_accuracy"] == rec["reference_balanced_accuracy"]
    assert load_bundle(path).info["variants"]["fp32"]["sha256"] == rec["sha256"]
    assert accepted_variant(load_bundle(path)) is None  # speed not measured: not served


def test_auto_serves_the_variant_only_when_measured_faster(variant_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(variant_bundle, path)
    bundle = load_bundle(path)
    rec = bundle.info["variants"]["fp32"]
    rec.update(images_per_s=300.0, reference_images_per_s=250.0)  # as measured at export
    assert accepted_variant(bundle) is rec
    rec["accepted"] = False
    assert accepted_variant(bundle) is None
    rec["accepted"] = True
    rec["images_per_s"] = 240.0  # no faster than the plain model.onnx
    assert accepted_variant(bundle) is None
    assert served_file(make_engine(bundle, precision="auto")) == ONNX
