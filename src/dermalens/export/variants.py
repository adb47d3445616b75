"""The optimised fp32 variant of a bundle, kept only if it agrees with the plain model.

    dermalens export BUNDLE --precision fp32 --data DATA --split-file runs/x/split.csv

The variant is the same network with its pads frozen and ONNX Runtime's graph
optimisations saved offline (`model.opt.onnx`, see `export.graph`). It is *accepted*
when its top-1 agreement with the plain model on the split's test images is at least
`TOP1_MIN` and its largest probability difference at most `MAX_PROB_DIFF`; otherwise it
is recorded as rejected, with its numbers, and its file is deleted. Both are timed
(batch 32), and `runtime.selection` serves the variant (`precision="auto"`) only when it
was accepted and measured faster. `bundle.info["variants"]["fp32"]` holds the record.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from dermalens.bundle import ONNX, Bundle, BundleError, load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.errors import VariantRejected
from dermalens.export.graph import optimise_onnx
from dermalens.files import now, sha256
from dermalens.preprocess import to_input
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.engines import OnnxEngine, cores
from dermalens.runtime.selection import MAX_PROB_DIFF, TOP1_MIN, VARIANT, VARIANT_FILE

BUILT = (VARIANT,)  # the precisions `export_variant` builds
CHUNK = 32  # images per model call while comparing


@dataclass
class Agreement:
    top1_agreement: float
    max_abs_prob_diff: float
    images: int
    predictions: np.ndarray = field(repr=False)  # candidate's answer per image
    reference: np.ndarray = field(repr=False)  # the plain model's answer per image

    def meets(self, top1_min: float = TOP1_MIN, max_diff: float = MAX_PROB_DIFF) -> bool:
        return self.top1_agreement >= top1_min and self.max_abs_prob_diff <= max_diff


def batches(images: Sequence, bundle: Bundle, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Preprocessed float32 batches of `images` (paths, bytes, PIL images or arrays)."""
    for start in range(0, len(images), size):
        yield np.stack([to_input(p, bundle.preprocessing) for p in images[start : start + size]])


def agreement(bundle: Bundle, reference, candidate, images: Sequence) -> Agreement:
    """Top-1 agreement and max |dp| of `candidate` against `reference` (engines), on the
    probabilities and answers the bundle serves."""
    served = Calibration.of(bundle)
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


def throughput(engine, bundle: Bundle, batch: int = 32, seconds: float = 2.0) -> float:
    """Images per second of `engine.run` on a random batch (warm)."""
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
    """The CPU model and the cores this process may use, recorded with every timing."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {cores()} cores"


def export_variant(
    bundle_path: str | Path,
    eval_images: Sequence,
    eval_labels: Sequence[str] | None = None,
    top1_min: float = TOP1_MIN,
    max_prob_diff: float = MAX_PROB_DIFF,
    measure_speed: bool = True,
) -> dict:
    """Build the optimised fp32 variant into the bundle, measure it against the plain model
    on `eval_images` and record it; returns the record.

    `eval_labels` (class codes) adds both models' balanced accuracy to the record.
    `measure_speed` times both for two seconds each (batch 32). A rejected variant is
    recorded, its file deleted, and `VariantRejected` raised with its numbers.
    """
    bundle = load_bundle(bundle_path)
    if bundle.is_ensemble:
        raise BundleError(f"{bundle.path}: an ensemble serves its members as they are")
    if not bundle.has(ONNX):
        raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}` first")
    if not eval_images:
        raise ValueError("export_variant needs held-out images to measure agreement")
    file = bundle.file(VARIANT_FILE)
    pre = bundle.preprocessing
    with tempfile.TemporaryDirectory(dir=bundle.path, prefix=".variant.") as tmp:
        staged = Path(tmp) / VARIANT_FILE
        optimise_onnx(bundle.file(ONNX), staged, pre.height, pre.width)
        reference, candidate = OnnxEngine(bundle), OnnxEngine(bundle, path=str(staged))
        result = agreement(bundle, reference, candidate, eval_images)
        accepted = result.meets(top1_min, max_prob_diff)
        record = {
            "precision": VARIANT,
            "engine": "onnxruntime",
            "file": VARIANT_FILE,
            "accepted": accepted,
            "top1_agreement": result.top1_agreement,
            "max_abs_prob_diff": result.max_abs_prob_diff,
            "images": result.images,
            "threshold": {"top1_agreement": top1_min, "max_abs_prob_diff": max_prob_diff},
            "size_bytes": staged.stat().st_size,
            "created": now(),
        }
        if eval_labels is not None:
            truth = [bundle.classes.index(c) for c in eval_labels]
            record["balanced_accuracy"] = float(balanced_accuracy_score(truth, result.predictions))
            record["reference_balanced_accuracy"] = float(
                balanced_accuracy_score(truth, result.reference)
            )
        if measure_speed and accepted:
            record["images_per_s"] = round(throughput(candidate, bundle), 1)
            record["reference_images_per_s"] = round(throughput(reference, bundle), 1)
            record["measured_on"] = machine()
        if accepted:
            shutil.move(staged, file)
            record["sha256"] = sha256(file)
        elif file.exists():
            file.unlink()  # an older accepted file must not outlive its rejection
    bundle.info.setdefault("variants", {})[VARIANT] = record
    bundle.save_description()
    if not accepted:
        raise VariantRejected(
            f"{bundle.path}: the {VARIANT} variant was not kept: top-1 agreement "
            f"{record['top1_agreement']:.4f} (needs >= {top1_min}), max |dp| "
            f"{record['max_abs_prob_diff']:.4f} (needs <= {max_prob_diff}) on "
            f"{record['images']} held-out images"
        )
    return record


def held_out_images(
    data: str | Path, split_file: str | Path, part: str = "test"
) -> tuple[list[Path], list[str]]:
    """(images of the split's `part`, their labels): what a variant is checked on."""
    table = load_split(load_dataset(data), Path(split_file))
    held = table[table["split"] == part]
    if held.empty:
        raise ValueError(f"{split_file}: no images in the {part!r} part")
    return list(map(Path, held["path"])), list(held["label"])


def export_variants(
    bundle_path: str | Path,
    precisions: Sequence[str],
    data: str | Path,
    split_file: str | Path,
    measure_speed: bool = True,
) -> dict[str, dict]:
    """`export_variant` for each precision asked (only "fp32" is built), checked on the
    test part of a run's split, with its labels for balanced accuracy."""
    unknown = [p for p in precisions if p not in BUILT]
    if unknown:
        raise ValueError(
            f"precision {unknown[0]!r} is not built: only {BUILT} (int8 and bf16 never met "
            f"the agreement bar; benchmarks/RESULTS.md)"
        )
    images, labels = held_out_images(data, split_file)
    return {
        p: export_variant(bundle_path, images, labels, measure_speed=measure_speed)
        for p in precisions
    }
