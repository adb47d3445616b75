"""Faster model variants, each kept only if it agrees with the fp32 model on held-out images.

    from dermalens.quantize import export_variant
    export_variant("runs/x/bundle", "int8", calib_images, eval_images)

Precisions (`bundle.info["variants"][precision]` records each):

- `fp32`: the same network, pads frozen and ONNX Runtime's graph optimisation saved
  offline (`model.opt.onnx`, see `dermalens.fast`); the answers do not change.
- `int8`: static post-training quantisation with ONNX Runtime (QDQ or QOperator,
  per-channel weights, entropy / percentile / min-max calibration on many images), with
  the sensitive layers left in float: the stem conv, squeeze-excite convs (if any) and
  the linear head (`model.int8.onnx`).
- `bf16`: PyTorch with bfloat16 autocast on `model.pt` (AVX-512 BF16 / AMX via oneDNN);
  needs PyTorch when serving.

A variant is *accepted* when its top-1 agreement with the fp32 model is at least
`TOP1_MIN` and its largest probability difference at most `MAX_PROB_DIFF` on the
evaluation images (which must not overlap the calibration images); otherwise it is
recorded as rejected, with its numbers, and its file is deleted. Serving
(`select_variant`, `make_engine(precision="auto")`) only ever uses accepted variants.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, load_bundle, now, sha256

PRECISIONS = ("fp32", "int8", "bf16")
FILES = {"fp32": "model.opt.onnx", "int8": "model.int8.onnx", "bf16": WEIGHTS}
ENGINES = {"fp32": "onnxruntime", "int8": "onnxruntime", "bf16": "torch-bf16"}
TOP1_MIN = 0.99  # least top-1 agreement with the fp32 model for a variant to be served
MAX_PROB_DIFF = 0.02  # largest |p_variant - p_fp32| over all images and classes
PREFERENCE = ("int8", "bf16", "fp32")  # tie-break when no speeds are recorded
CHUNK = 32  # images per model call while calibrating and comparing


@dataclass(frozen=True)
class Int8Config:
    """How `quantize_int8` quantises; stored with the variant."""

    calibration: str = "entropy"  # "entropy" | "percentile" | "minmax"
    percentile: float = 99.999  # for calibration="percentile"
    bins: int = 512  # histogram bins for entropy / percentile
    format: str = "qdq"  # "qdq" (QuantizeLinear/DequantizeLinear pairs) | "qoperator"
    per_channel: bool = True  # one weight scale per output channel
    keep_fp32: tuple[str, ...] = ("stem", "se", "head")  # node groups left in float
    op_types: tuple[str, ...] = ()  # only these op types (empty: ORT's default set)

    def __post_init__(self) -> None:
        if self.calibration not in ("entropy", "percentile", "minmax"):
            raise ValueError(f"calibration {self.calibration!r} not in entropy/percentile/minmax")
        if self.format not in ("qdq", "qoperator"):
            raise ValueError(f"format {self.format!r} not in ('qdq', 'qoperator')")
        unknown = set(self.keep_fp32) - set(GROUPS)
        if unknown:
            raise ValueError(f"keep_fp32 groups {sorted(unknown)} not in {GROUPS}")


GROUPS = ("stem", "se", "head", "last", "depthwise")


@dataclass
class Agreement:
    top1_agreement: float
    max_abs_prob_diff: float
    images: int
    predictions: np.ndarray = field(repr=False)  # candidate's argmax per image

    def meets(self, top1_min: float = TOP1_MIN, max_diff: float = MAX_PROB_DIFF) -> bool:
        return self.top1_agreement >= top1_min and self.max_abs_prob_diff <= max_diff


# --- inputs ---------------------------------------------------------------------------


def batches(images: Sequence, bundle: Bundle, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Preprocessed float32 batches of `images` (paths, bytes, PIL images or arrays)."""
    from dermalens.preprocess import to_input

    for start in range(0, len(images), size):
        yield np.stack([to_input(p, bundle.preprocessing) for p in images[start : start + size]])


def _feeds(session, batch: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"image": batch}
    if any(i.name == "metadata" for i in session.get_inputs()):
        from dermalens import metadata

        feeds["metadata"] = np.tile(metadata.encode(), (len(batch), 1)).astype(np.float32)
    return feeds


class _Reader:
    """ORT CalibrationDataReader over preprocessed batches."""

    def __init__(self, session, chunks: list[np.ndarray]):
        self.feeds = iter([_feeds(session, c) for c in chunks])

    def get_next(self):
        return next(self.feeds, None)


# --- int8 -----------------------------------------------------------------------------


def sensitive_nodes(model, groups: Sequence[str]) -> list[str]:
    """Names of nodes in `groups` (see `GROUPS`) of an ONNX model, to keep in float."""
    from onnx import helper

    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in nodes if n.op_type == "Conv"]
    out: list[str] = []
    if "stem" in groups and convs:
        out.append(convs[0].name)
    if "last" in groups and convs:
        out.append(convs[-1].name)
    if "se" in groups:
        # squeeze-excite: global pool -> conv -> act -> conv -> sigmoid -> mul
        for n in convs:
            src = producer.get(n.input[0])
            pooled = src is not None and src.op_type in ("ReduceMean", "GlobalAveragePool")
            if pooled and any(c.op_type == "Conv" for c in nodes if src.output[0] in c.input):
                out.append(n.name)
            consumers = [c for c in nodes if n.output[0] in c.input]
            if any(c.op_type in ("Sigmoid", "HardSigmoid") for c in consumers) or "/se/" in n.name:
                out.append(n.name)
    if "head" in groups:
        # everything that produces the logits from the pooled features
        stack, seen = [o.name for o in model.graph.output if o.name == "logits"], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen or node.op_type == "Conv":
                continue
            seen.add(node.name)
            out.append(node.name)
            stack += [i for i in node.input if i not in inits]
    if "depthwise" in groups:
        for n in convs:
            group = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
            if group > 1:
                out.append(n.name)
    return sorted(set(out))


def calibrate(
    model_path: Path, chunks: Iterator[np.ndarray], config: Int8Config, cache: Path
) -> int:
    """Run the calibration images through the model chunk by chunk (bounded memory);
    write the activation ranges to `cache`; return how many images were used."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "minmax": CalibrationMethod.MinMax,
    }[config.calibration]
    extra: dict = {}
    if config.calibration == "entropy":
        extra = {"num_bins": config.bins, "num_quantized_bins": 128}
    elif config.calibration == "percentile":
        extra = {"num_bins": config.bins, "percentile": config.percentile}
    with tempfile.TemporaryDirectory(prefix="dermalens-calib-") as tmp:
        calibrator = create_calibrator(
            model_path,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
        calibrator.augment_graph()
        calibrator.create_inference_session()
        seen = 0
        for chunk in chunks:
            calibrator.collect_data(_Reader(calibrator.infer_session, [chunk]))
            seen += len(chunk)
        save_tensors_data(calibrator.compute_data(), cache)
    return seen


def quantize_int8(
    src: Path, dst: Path, cache: Path, config: Int8Config, height: int, width: int
) -> list[str]:
    """Quantise `src` (float ONNX) to `dst` with the ranges in `cache`; returns the nodes
    kept in float. `cache` must come from `calibrate` on `prepare_for_int8`'s output."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "minmax": CalibrationMethod.MinMax,
    }[config.calibration]
    keep = sensitive_nodes(onnx.load(str(src)), config.keep_fp32)
    quantize_static(
        str(src),
        str(dst),
        calibration_data_reader=None,
        calibration_cache_path=str(cache),
        calibrate_method=method,
        quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
        per_channel=config.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=keep,
        op_types_to_quantize=list(config.op_types) or None,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return keep


def prepare_for_int8(src: Path, dst: Path, height: int, width: int) -> Path:
    """Frozen pads, then ORT's quantisation pre-processing (shape inference, cleanup)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dermalens.fast import freeze_pads

    frozen = dst.with_suffix(".frozen.onnx")
    freeze_pads(src, frozen, height, width)
    quant_pre_process(str(frozen), str(dst), skip_symbolic_shape=True)
    frozen.unlink()
    return dst


# --- agreement and speed --------------------------------------------------------------


def agreement(bundle: Bundle, reference, candidate, images: Sequence) -> Agreement:
    """Top-1 agreement and max |dp| of `candidate` against `reference` (engines)."""
    from dermalens.predict import softmax

    same, worst, preds, n = 0, 0.0, [], 0
    for batch in batches(images, bundle):
        p_ref = softmax(reference.run(batch)[0], bundle.temperature)
        p_new = softmax(candidate.run(batch)[0], bundle.temperature)
        same += int((p_ref.argmax(1) == p_new.argmax(1)).sum())
        worst = max(worst, float(np.abs(p_ref - p_new).max()))
        preds.append(p_new.argmax(1))
        n += len(batch)
    if not n:
        raise ValueError("no evaluation images")
    return Agreement(same / n, worst, n, np.concatenate(preds))


def throughput(engine, bundle: Bundle, batch: int = 32, seconds: float = 2.0) -> float:
    """Images per second of `engine.run` on a random batch (warm), for ranking variants."""
    pre = bundle.preprocessing
    x = np.random.default_rng(0).normal(size=(batch, 3, pre.height, pre.width))
    x = x.astype(np.float32)
    engine.run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.run(x)
        done += batch
    return done / (time.perf_counter() - start)


def machine() -> str:
    from dermalens.fast import cores

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {cores()} cores"


# --- variants in a bundle -------------------------------------------------------------


def variant_engine(bundle: Bundle, precision: str, path: Path | None = None, threads: int = 0):
    """An engine running one variant (its file from the bundle unless `path` is given)."""
    from dermalens.engine import OnnxEngine, TorchBf16Engine

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if ENGINES[precision] == "torch-bf16":
        return TorchBf16Engine(bundle, threads)
    return OnnxEngine(bundle, threads, path=str(path or bundle.file(FILES[precision])))


def build_variant(bundle: Bundle, precision: str, dst: Path, calib_images, config) -> dict:
    """Write the variant's file to `dst` (nothing for bf16); returns build facts."""
    from dermalens.fast import optimise_onnx

    pre = bundle.preprocessing
    if precision == "fp32":
        optimise_onnx(bundle.file(ONNX), dst, pre.height, pre.width)
        return {}
    if precision == "bf16":
        return {}
    if not calib_images:
        raise ValueError("int8 needs calibration images (at least a few hundred for real models)")
    with tempfile.TemporaryDirectory(prefix="dermalens-int8-") as tmp:
        prepared = prepare_for_int8(bundle.file(ONNX), Path(tmp) / "prep.onnx", pre.height, pre.width)
        cache = Path(tmp) / "ranges.json"
        seen = calibrate(prepared, batches(calib_images, bundle), config, cache)
        kept = quantize_int8(prepared, dst, cache, config, pre.height, pre.width)
    return {"config": asdict(config), "calibration_images": seen, "kept_fp32": kept}


def export_variant(
    bundle_path: str | Path,
    precision: str,
    calib_images: Sequence | None = None,
    eval_images: Sequence | None = None,
    config: Int8Config | None = None,
    top1_min: float = TOP1_MIN,
    max_prob_diff: float = MAX_PROB_DIFF,
    measure_speed: bool = True,
) -> dict:
    """Build one variant into the bundle, measure it against fp32 and record it.

    Returns the record written to `bundle.info["variants"][precision]`.
    """
    bundle = load_bundle(bundle_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if not bundle.has(ONNX):
        raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}` first")
    if not eval_images:
        raise ValueError("export_variant needs evaluation images to measure agreement")
    overlap = {str(p) for p in calib_images or []} & {str(p) for p in eval_images}
    if overlap:
        raise ValueError(
            f"{len(overlap)} images are both calibration and evaluation images "
            f"(e.g. {sorted(overlap)[0]}); agreement must be measured on held-out images"
        )
    from dermalens.engine import OnnxEngine

    file = bundle.file(FILES[precision])
    with tempfile.TemporaryDirectory(dir=bundle.path, prefix=".variant.") as tmp:
        staged = Path(tmp) / FILES[precision]
        facts = build_variant(bundle, precision, staged, calib_images, config or Int8Config())
        reference = OnnxEngine(bundle)
        candidate = variant_engine(bundle, precision, staged if staged.exists() else None)
        result = agreement(bundle, reference, candidate, eval_images)
        accepted = result.meets(top1_min, max_prob_diff)
        record = {
            "precision": precision,
            "engine": ENGINES[precision],
            "file": FILES[precision],
            "accepted": accepted,
            "top1_agreement": result.top1_agreement,
            "max_abs_prob_diff": result.max_abs_prob_diff,
            "images": result.images,
            "threshold": {"top1_agreement": top1_min, "max_abs_prob_diff": max_prob_diff},
            **facts,
            "created": now(),
        }
        if measure_speed and accepted:
            record["images_per_s"] = round(throughput(candidate, bundle), 1)
            record["reference_images_per_s"] = round(throughput(reference, bundle), 1)
            record["measured_on"] = machine()
        if staged.exists():
            record["size_bytes"] = staged.stat().st_size
            if accepted:
                shutil.move(staged, file)
                record["sha256"] = sha256(file)
            elif file.exists() and precision != "bf16":
                file.unlink()  # an older accepted file must not outlive its rejection
        elif precision == "bf16":
            record["size_bytes"] = file.stat().st_size
            record["sha256"] = sha256(file)
    bundle.info.setdefault("variants", {})[precision] = record
    bundle.save_description()
    return record


def accepted_variants(bundle: Bundle) -> dict[str, dict]:
    """The bundle's accepted variants whose file is present and unchanged."""
    out = {}
    for precision, rec in (bundle.info.get("variants") or {}).items():
        if precision not in PRECISIONS or not rec.get("accepted"):
            continue
        if not bundle.has(rec["file"]) or sha256(bundle.file(rec["file"])) != rec.get("sha256"):
            continue
        if rec["engine"] == "torch-bf16" and not _has_torch():
            continue
        out[precision] = rec
    return out


def select_variant(bundle: Bundle, precision: str = "auto") -> str | None:
    """The precision to serve: `precision` if accepted, or with "auto" the fastest
    accepted variant (None: use the plain `model.onnx`). Raises for a named variant that
    is missing or was rejected."""
    good = accepted_variants(bundle)
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {('auto', *PRECISIONS)}")
        if precision not in good:
            rec = (bundle.info.get("variants") or {}).get(precision)
            why = (
                "was never exported"
                if rec is None
                else f"was rejected (top-1 agreement {rec['top1_agreement']:.4f}, "
                f"max |dp| {rec['max_abs_prob_diff']:.4f} on {rec['images']} images)"
                if not rec.get("accepted")
                else "has a missing or changed file"
            )
            raise BundleError(f"{bundle.path}: the {precision} variant {why}")
        return precision
    if not good:
        return None

    def speed(p: str) -> tuple[float, int]:
        rec = good[p]
        faster = rec.get("images_per_s", 0) / max(rec.get("reference_images_per_s", 1e-9), 1e-9)
        return (faster, -PREFERENCE.index(p))

    best = max(good, key=speed)
    rec = good[best]
    if "images_per_s" in rec and rec["images_per_s"] <= rec.get("reference_images_per_s", 0):
        return None  # measured, and no faster than the plain model
    return best


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def variants_card(bundle: Bundle) -> list[dict]:
    """One row per recorded variant for the model card: accuracy agreement and speed."""
    rows = []
    for precision, rec in sorted((bundle.info.get("variants") or {}).items()):
        rows.append(
            {
                "precision": precision,
                "accepted": rec.get("accepted", False),
                "top1_agreement": rec.get("top1_agreement"),
                "max_abs_prob_diff": rec.get("max_abs_prob_diff"),
                "images": rec.get("images"),
                "images_per_s": rec.get("images_per_s"),
                "balanced_accuracy": rec.get("balanced_accuracy"),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m dermalens.quantize BUNDLE PRECISION --calib DIR --eval DIR` (for testing)."""
    import argparse

    from dermalens.predict import iter_images

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("precision", choices=PRECISIONS)
    p.add_argument("--calib", nargs="*", default=[])
    p.add_argument("--eval", nargs="+", required=True)
    args = p.parse_args(argv)
    calib = iter_images(args.calib) if args.calib else []
    record = export_variant(args.model, args.precision, calib, iter_images(args.eval))
    print(json.dumps(record, indent=2, default=str))
    return 0 if record["accepted"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
