"""INT8 post-training quantisation with ONNX Runtime, the sensitive layers kept in float.

    from dermalens.quantize import Int8Config, calibrate, prepare_for_int8, quantize_int8

Static quantisation: activations uint8 with ranges from calibration images (entropy,
percentile or min-max histograms, collected chunk by chunk so memory stays bounded),
weights int8 per output channel, as QDQ pairs (ONNX Runtime fuses them into integer
kernels) or QOperator nodes. The stem conv, squeeze-excite convs (if any) and the linear
head stay in float by default; more groups can be named (`Int8Config.keep_fp32`).
Whether a quantised model may be served is decided in `dermalens.variants`.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermalens.bundle import Bundle

CHUNK = 32  # images per model call while calibrating and comparing


@dataclass(frozen=True)
class Int8Config:
    """How `quantize_int8` quantises; stored with the variant."""

    calibration: str = "percentile"  # "percentile" | "entropy" | "minmax"
    percentile: float = 99.999  # for calibration="percentile"
    bins: int = 512  # histogram bins for entropy / percentile
    format: str = "qdq"  # "qdq" (QuantizeLinear/DequantizeLinear pairs) | "qoperator"
    per_channel: bool = True  # one weight scale per output channel
    keep_fp32: tuple[str, ...] = ("stem", "se", "head")  # node groups left in float
    op_types: tuple[str, ...] = ()  # only these op types (empty: ORT's default set)

    @classmethod
    def from_name(cls, name: str) -> Int8Config:
        """'percentile-qdq', 'entropy-qoperator-last-stage2' ...: calibration, format, then
        groups kept in float besides the stem, squeeze-excite and head."""
        if name.count("-") < 1:
            raise ValueError(f"int8 config {name!r}: expected <calibration>-<format>[-<group>...]")
        calibration, fmt, *extra = name.split("-")
        return cls(calibration=calibration, format=fmt, keep_fp32=("stem", "se", "head", *extra))

    def __post_init__(self) -> None:
        if self.calibration not in ("entropy", "percentile", "minmax"):
            raise ValueError(f"calibration {self.calibration!r} not in entropy/percentile/minmax")
        if self.format not in ("qdq", "qoperator"):
            raise ValueError(f"format {self.format!r} not in ('qdq', 'qoperator')")
        unknown = {g for g in self.keep_fp32 if g not in GROUPS and not STAGE.fullmatch(g)}
        if unknown:
            raise ValueError(
                f"keep_fp32 groups {sorted(unknown)} not in {GROUPS} or stage<N> (timm's blocks.N)"
            )


GROUPS = ("stem", "se", "head", "last", "depthwise")
STAGE = re.compile(r"stage(\d+)")


def batches(images: Sequence, bundle: Bundle, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Preprocessed float32 batches of `images` (paths, bytes, PIL images or arrays)."""
    from dermalens.preprocess import to_input

    for start in range(0, len(images), size):
        yield np.stack([to_input(p, bundle.preprocessing) for p in images[start : start + size]])


def _feeds(session, batch: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {"image": batch}
    if any(i.name == "metadata" for i in session.get_inputs()):
        from dermalens import patient

        feeds["metadata"] = np.tile(patient.encode(), (len(batch), 1)).astype(np.float32)
    return feeds


class _Reader:
    """ORT CalibrationDataReader over preprocessed batches."""

    def __init__(self, session, chunks: list[np.ndarray]):
        self.feeds = iter([_feeds(session, c) for c in chunks])

    def get_next(self):
        return next(self.feeds, None)


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
    for group in groups:
        if match := STAGE.fullmatch(group):
            out += [n.name for n in nodes if f"/blocks.{match.group(1)}/" in n.name]
    if "depthwise" in groups:
        for n in convs:
            group = next(
                (helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1
            )
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
    # ORT's calibrators print progress on stdout; keep the caller's output clean
    with (
        tempfile.TemporaryDirectory(prefix="dermalens-calib-") as tmp,
        redirect_stdout(io.StringIO()),
    ):
        calibrator = create_calibrator(
            model_path,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
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

    from dermalens.export.graph import freeze_pads

    frozen = dst.with_suffix(".frozen.onnx")
    freeze_pads(src, frozen, height, width)
    quant_pre_process(str(frozen), str(dst), skip_symbolic_shape=True)
    frozen.unlink()
    return dst
