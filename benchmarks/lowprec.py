"""Low-precision variants for the benchmarks: INT8 post-training quantisation with ONNX
Runtime (the sensitive layers kept in float) and PyTorch bf16 autocast.

    python benchmarks/lowprec.py BUNDLE int8 bf16 --data ../shared/data/ham10000 \
        --split-file runs/x/split.csv --calib 512 --int8 percentile-qdq

Neither variant met the agreement bar (top-1 >= 0.99 and max |dp| <= 0.02 against the plain
fp32 model; benchmarks/RESULTS.md), so since 2026-12-03 the library builds and serves only
the optimised fp32 graph (`dermalens.export.variants`, `dermalens.runtime.selection`) and
this code lives here, beside the benchmarks that use it (`speed.py`, `int8_scan.py`).
`main` measures the agreement of either variant on a run's held-out images as the library
used to (`python -m dermalens.variants BUNDLE int8 bf16 ...` before 2026-12-03); it writes
nothing into the bundle.

INT8: static quantisation, activations uint8 with ranges from calibration images (entropy,
percentile or min-max histograms, collected chunk by chunk so memory stays bounded),
weights int8 per output channel, as QDQ pairs (ONNX Runtime fuses them into integer
kernels) or QOperator nodes. The stem conv, squeeze-excite convs (if any) and the linear
head stay in float by default; more groups can be named (`Int8Config.keep_fp32`).
bf16: `TorchBf16Engine`, PyTorch on `model.pt` under bfloat16 autocast.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from dermalens.bundle import ONNX, Bundle, load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.export.variants import agreement, batches
from dermalens.runtime.engines import OnnxEngine, TorchEngine
from dermalens.runtime.selection import MAX_PROB_DIFF, TOP1_MIN

ROOT = Path(__file__).resolve().parents[1]
INT8_FILE = "model.int8.onnx"  # where bundles exported before 2026-12-03 kept an int8 model
LOW_PRECISIONS = ("int8", "bf16")


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


class TorchBf16Engine(TorchEngine):
    """PyTorch with bfloat16 autocast (oneDNN uses AVX-512 BF16 or AMX where the CPU has
    them); logits and features come back as float32."""

    name = "torch-bf16"

    def run(self, batch, meta=None):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.contiguous(memory_format=torch.channels_last)
        m = torch.from_numpy(meta.astype(np.float32)) if meta is not None else None
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            fmap = self.model.features(x)
            logits = self.model.classify(fmap, m)
        return logits.float().numpy(), fmap.float().numpy()


def build_int8(bundle: Bundle, dst: Path, calib_images: Sequence, config: Int8Config) -> dict:
    """Quantise the bundle's `model.onnx` to `dst` (calibrated on `calib_images`); returns
    the build facts the library used to record with an int8 variant."""
    if not calib_images:
        raise ValueError("int8 needs calibration images (at least a few hundred for real models)")
    pre = bundle.preprocessing
    with (
        tempfile.TemporaryDirectory(prefix="dermalens-int8-") as tmp,
        redirect_stdout(io.StringIO()),
    ):
        prepared = prepare_for_int8(
            bundle.file(ONNX), Path(tmp) / "prep.onnx", pre.height, pre.width
        )
        cache = Path(tmp) / "ranges.json"
        seen = calibrate(prepared, batches(calib_images, bundle), config, cache)
        kept = quantize_int8(prepared, dst, cache, config, pre.height, pre.width)
    return {"config": asdict(config), "calibration_images": seen, "kept_fp32": kept}


def split_images(
    data: str | Path, split_file: str | Path, calib: int = 512
) -> tuple[list[Path], list[Path], list[str]]:
    """(calibration images sampled from the train part, test images, their labels), drawn
    as the library drew them before 2026-12-03 (so its recorded numbers can be rerun)."""
    table = load_split(load_dataset(data), Path(split_file))
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    if test.empty:
        raise ValueError(f"{split_file}: no images in the 'test' part")
    chosen = train.sample(min(calib, len(train)), random_state=0) if calib else train[:0]
    return list(map(Path, chosen["path"])), list(map(Path, test["path"])), list(test["label"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="bundle folder (with model.onnx; model.pt for bf16)")
    p.add_argument("precision", nargs="+", choices=LOW_PRECISIONS)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ham10000"))
    p.add_argument("--split-file", required=True, help="the run's split.csv")
    p.add_argument("--calib", type=int, default=512, help="calibration images (train part)")
    p.add_argument("--int8", default="percentile-qdq", help="int8 config, e.g. entropy-qdq")
    p.add_argument("--save", type=Path, help="keep the int8 model in this folder")
    p.add_argument("--out", type=Path, help="write the records as JSON here")
    args = p.parse_args(argv)
    bundle = load_bundle(args.model)
    if bundle.is_ensemble:
        sys.exit(f"{bundle.path} is an ensemble: run this on each member")
    calib, images, labels = split_images(args.data, args.split_file, args.calib)
    truth = [bundle.classes.index(c) for c in labels]
    reference, records = OnnxEngine(bundle), {}
    with tempfile.TemporaryDirectory(prefix="dermalens-lowprec-") as tmp:
        for precision in args.precision:
            facts: dict = {}
            if precision == "int8":
                dst = Path(tmp) / INT8_FILE
                facts = build_int8(bundle, dst, calib, Int8Config.from_name(args.int8))
                candidate = OnnxEngine(bundle, path=str(dst))
                if args.save:
                    args.save.mkdir(parents=True, exist_ok=True)
                    (args.save / INT8_FILE).write_bytes(dst.read_bytes())
            else:
                candidate = TorchBf16Engine(bundle)
            result = agreement(bundle, reference, candidate, images)
            records[precision] = rec = {
                "precision": precision,
                "engine": candidate.name,
                "meets": result.meets(),
                "top1_agreement": result.top1_agreement,
                "max_abs_prob_diff": result.max_abs_prob_diff,
                "images": result.images,
                "threshold": {"top1_agreement": TOP1_MIN, "max_abs_prob_diff": MAX_PROB_DIFF},
                "balanced_accuracy": float(balanced_accuracy_score(truth, result.predictions)),
                "reference_balanced_accuracy": float(
                    balanced_accuracy_score(truth, result.reference)
                ),
                **facts,
            }
            verdict = "meets the bar" if rec["meets"] else "fails the bar"
            print(
                f"{precision}: {verdict}: top-1 agreement {rec['top1_agreement']:.4f}, "
                f"max |dp| {rec['max_abs_prob_diff']:.4f} on {rec['images']} held-out images "
                f"(needs >= {TOP1_MIN} and <= {MAX_PROB_DIFF})",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
