"""Faster model variants, each kept only if it agrees with the fp32 model on held-out images.

    from dermalens.variants import export_variant
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

import io
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, load_bundle, now, sha256
from dermalens.quantize import Int8Config, batches, calibrate, prepare_for_int8, quantize_int8

PRECISIONS = ("fp32", "int8", "bf16")
FILES = {"fp32": "model.opt.onnx", "int8": "model.int8.onnx", "bf16": WEIGHTS}
ENGINES = {"fp32": "onnxruntime", "int8": "onnxruntime", "bf16": "torch-bf16"}
TOP1_MIN = 0.99  # least top-1 agreement with the fp32 model for a variant to be served
MAX_PROB_DIFF = 0.02  # largest |p_variant - p_fp32| over all images and classes
PREFERENCE = ("int8", "bf16", "fp32")  # tie-break when no speeds are recorded


@dataclass
class Agreement:
    top1_agreement: float
    max_abs_prob_diff: float
    images: int
    predictions: np.ndarray = field(repr=False)  # candidate's argmax per image
    reference: np.ndarray = field(repr=False)  # the fp32 model's argmax per image

    def meets(self, top1_min: float = TOP1_MIN, max_diff: float = MAX_PROB_DIFF) -> bool:
        return self.top1_agreement >= top1_min and self.max_abs_prob_diff <= max_diff


def agreement(bundle: Bundle, reference, candidate, images: Sequence) -> Agreement:
    """Top-1 agreement and max |dp| of `candidate` against `reference` (engines)."""
    from dermalens.predict import Calibration

    served = Calibration.of(bundle)  # the served numbers: probabilities and answers
    worst, preds, refs = 0.0, [], []
    for batch in batches(images, bundle):
        p_ref = served.probabilities(reference.run(batch)[0])
        p_new = served.probabilities(candidate.run(batch)[0])
        worst = max(worst, float(np.abs(p_ref - p_new).max()))
        preds.append(served.decide(p_new))
        refs.append(served.decide(p_ref))
    if not preds:
        raise ValueError("no evaluation images")
    pred, ref = np.concatenate(preds), np.concatenate(refs)
    return Agreement(float((pred == ref).mean()), worst, len(pred), pred, ref)


def balanced_accuracies(bundle: Bundle, result: Agreement, labels: Sequence[str]) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    truth = [bundle.classes.index(c) for c in labels]
    return {
        "balanced_accuracy": float(balanced_accuracy_score(truth, result.predictions)),
        "reference_balanced_accuracy": float(balanced_accuracy_score(truth, result.reference)),
    }


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


def variant_engine(
    bundle: Bundle,
    precision: str,
    path: Path | None = None,
    threads: int = 0,
    spinning: bool = True,
):
    """An engine running one variant (its file from the bundle unless `path` is given)."""
    from dermalens.engine import OnnxEngine, TorchBf16Engine

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if ENGINES[precision] == "torch-bf16":
        return TorchBf16Engine(bundle, threads)
    return OnnxEngine(
        bundle, threads, path=str(path or bundle.file(FILES[precision])), spinning=spinning
    )


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


def export_variant(
    bundle_path: str | Path,
    precision: str,
    calib_images: Sequence | None = None,
    eval_images: Sequence | None = None,
    config: Int8Config | None = None,
    top1_min: float = TOP1_MIN,
    max_prob_diff: float = MAX_PROB_DIFF,
    measure_speed: bool = True,
    eval_labels: Sequence[str] | None = None,
) -> dict:
    """Build one variant into the bundle, measure it against fp32 and record it.

    `eval_labels` (class codes of the evaluation images) adds the balanced accuracy of
    the variant and of the fp32 model to the record, for the model card. `measure_speed`
    times both for two seconds each (batch 32), which ranks variants for serving.
    Returns the record written to `bundle.info["variants"][precision]`.
    """
    bundle = load_bundle(bundle_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    if bundle.is_ensemble:
        raise BundleError(f"{bundle.path}: an ensemble serves its members at fp32 only")
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
        if eval_labels is not None:
            record.update(balanced_accuracies(bundle, result, eval_labels))
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
            raise BundleError(f"{bundle.path}: the {precision} variant {_why_not(rec)}")
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


def _why_not(rec: dict | None) -> str:
    if rec is None:
        return "was never exported"
    if not rec.get("accepted"):
        return (
            f"was rejected (top-1 agreement {rec['top1_agreement']:.4f}, "
            f"max |dp| {rec['max_abs_prob_diff']:.4f} on {rec['images']} images)"
        )
    if rec["engine"] == "torch-bf16" and not _has_torch():
        return "needs PyTorch, which is not installed"
    return "has a missing or changed file"


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def variants_card(bundle: Bundle) -> list[dict]:
    """One row per recorded variant for the model card: agreement, accuracy and speed."""
    keys = (
        "accepted",
        "top1_agreement",
        "max_abs_prob_diff",
        "images",
        "balanced_accuracy",
        "reference_balanced_accuracy",
        "images_per_s",
        "reference_images_per_s",
        "measured_on",
        "size_bytes",
    )
    variants = bundle.info.get("variants") or {}
    return [{"precision": p, **{k: variants[p].get(k) for k in keys}} for p in sorted(variants)]


def split_images(
    data: str | Path, split_file: str | Path, calib: int = 512, held_out: str = "test"
) -> tuple[list[Path], list[Path], list[str]]:
    """(calibration images from the training part, held-out images, their labels)."""
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import load_split

    table = load_split(load_dataset(data), Path(split_file))
    train = table[table["split"] == "train"]
    test = table[table["split"] == held_out]
    if test.empty:
        raise ValueError(f"{split_file}: no images in the {held_out!r} part")
    chosen = train.sample(min(calib, len(train)), random_state=0) if calib else train[:0]
    return list(map(Path, chosen["path"])), list(map(Path, test["path"])), list(test["label"])


def export_variants(
    bundle_path: str | Path,
    precisions: Sequence[str],
    data: str | Path,
    split_file: str | Path,
    calib: int = 512,
    config: Int8Config | None = None,
    measure_speed: bool = True,
) -> dict[str, dict]:
    """`export_variant` for each precision, on a run's split: calibrate on training images,
    measure on the test images (with their labels, for balanced accuracy)."""
    calib_images, eval_images, labels = split_images(data, split_file, calib)
    return {
        p: export_variant(
            bundle_path,
            p,
            calib_images,
            eval_images,
            config,
            eval_labels=labels,
            measure_speed=measure_speed,
        )
        for p in precisions
    }


def main(argv: list[str] | None = None) -> int:
    """python -m dermalens.variants BUNDLE int8 [bf16 fp32] --data D --split-file S"""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("precision", nargs="+", choices=PRECISIONS)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--split-file", required=True, help="the run's split.csv")
    p.add_argument("--calib", type=int, default=512, help="calibration images (train part)")
    p.add_argument("--int8", default="percentile-qdq", help="int8 config, e.g. entropy-qdq")
    args = p.parse_args(argv)
    records = export_variants(
        args.model,
        args.precision,
        args.data,
        args.split_file,
        args.calib,
        Int8Config.from_name(args.int8),
    )
    for precision, rec in records.items():
        verdict = "kept" if rec["accepted"] else "REJECTED"
        print(
            f"{precision}: {verdict}: top-1 agreement {rec['top1_agreement']:.4f}, "
            f"max |dp| {rec['max_abs_prob_diff']:.4f} on {rec['images']} held-out images"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
