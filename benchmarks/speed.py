"""Speed and agreement of every inference variant of a bundle, side by side, in one run.

    python benchmarks/speed.py runs/x/bundle ../shared/data/ham10000 \
        --split-file runs/x/split.csv --out benchmarks/results/speed.json

Variants: PyTorch eager (channels_last) fp32 and bf16 autocast; ONNX Runtime fp32
(`model.onnx`), its offline-optimised graph (`model.opt.onnx`, the one variant the library
serves), the same on one single-threaded session per core (`SplitEngine`), an int8 model
left in the bundle by the library before 2026-12-03 (`model.int8.onnx`) and any int8
configurations named with `--int8` (built here with `lowprec.py`, calibrated on `--calib`
training-split images); bf16 is `lowprec.TorchBf16Engine`. Timings alternate
between variants in `--rounds` rounds so drift in the machine hits all of them alike.

Per variant and batch size (1 and 32): images/s, p50 / p99 latency of one call, the
ratio to the fp32 compute roofline; per variant: peak memory (a fresh process running
it), model file size, top-1 agreement and max |dp| against ONNX Runtime fp32 and
balanced accuracy on the held-out (`--split`) images, and `Predictor.predict()` latency
of one JPEG including decoding (with and without the heatmap). Finally the streaming
folder pipeline (`dermalens.runtime.folder.predict_folder`) over the held-out images, from disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lowprec import (
    INT8_FILE,
    Int8Config,
    TorchBf16Engine,
    calibrate,
    prepare_for_int8,
    quantize_int8,
)

from dermalens.bundle import ONNX, Bundle, load_bundle
from dermalens.export.variants import batches, machine
from dermalens.files import now
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.engines import OnnxEngine, cores
from dermalens.runtime.selection import MAX_PROB_DIFF, TOP1_MIN, VARIANT_FILE

ROOT = Path(__file__).resolve().parents[1]

BATCHES = (1, 32)


@dataclass
class Variant:
    name: str
    kind: str  # "torch" | "torch-bf16" | "ort" | "split"
    path: Path | None = None  # ONNX file for ort / split
    note: str = ""
    results: dict = field(default_factory=dict)
    spinning: bool = True  # ONNX Runtime threads busy-wait between calls


class SplitEngine:
    """Several single-threaded engines, each running a slice of the batch in its own
    thread. On few cores this can beat one engine with intra-op threads, which must meet
    at every layer; a batch of one runs on the first engine alone."""

    name = "split"

    def __init__(self, engines: list):
        self.engines = engines
        self.bundle = engines[0].bundle
        self.pool = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="split")

    def run(self, batch: np.ndarray, meta: np.ndarray | None = None):
        parts = min(len(self.engines), len(batch))
        if parts == 1:
            return self.engines[0].run(batch, meta)
        edges = np.linspace(0, len(batch), parts + 1).astype(int)
        jobs = [
            self.pool.submit(engine.run, batch[a:b], None if meta is None else meta[a:b])
            for engine, a, b in zip(self.engines, edges[:-1], edges[1:])
        ]
        outs = [job.result() for job in jobs]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def head(self):
        return self.engines[0].head()


def split_engine(engine, parts: int = 0) -> SplitEngine:
    """`parts` (0: one per core) single-threaded copies of an ONNX Runtime engine."""

    if not isinstance(engine, OnnxEngine):
        raise TypeError(f"only ONNX Runtime engines can be split, not {type(engine).__name__}")
    copies = [
        OnnxEngine(engine.bundle, 1, path=engine.model_path, spinning=engine.spinning)
        for _ in range(parts or cores())
    ]
    return SplitEngine(copies)


def make_engine(bundle: Bundle, v: Variant):
    from dermalens.runtime.engines import OnnxEngine, TorchEngine

    if v.kind == "torch":
        return TorchEngine(bundle)
    if v.kind == "torch-bf16":
        return TorchBf16Engine(bundle)
    if v.kind == "ort":
        return OnnxEngine(bundle, path=str(v.path), spinning=v.spinning)
    return SplitEngine(
        [OnnxEngine(bundle, 1, path=str(v.path), spinning=v.spinning) for _ in range(cores())]
    )


def held_out(data: str, split_file: Path, split: str):
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import load_split

    table = load_split(load_dataset(data), split_file)
    return table[table["split"] == split].reset_index(drop=True), table[table["split"] == "train"]


def build_int8(bundle: Bundle, configs: dict[str, Int8Config], calib: list, tmp: Path) -> list:
    pre = bundle.preprocessing
    prepared = prepare_for_int8(bundle.file(ONNX), tmp / "prep.onnx", pre.height, pre.width)
    variants, caches = [], {}
    for name, config in configs.items():
        cache = caches.get(config.calibration)
        if cache is None:  # one calibration pass per method, shared by formats
            cache = caches[config.calibration] = tmp / f"ranges-{config.calibration}.json"
            start = time.perf_counter()
            calibrate(prepared, batches(calib, bundle), config, cache)
            print(f"calibrated {config.calibration} in {time.perf_counter() - start:.0f} s")
        dst = tmp / f"int8-{name}.onnx"
        quantize_int8(prepared, dst, cache, config, pre.height, pre.width)
        variants.append(Variant(f"ORT int8 {name}", "ort", dst, f"{len(calib)} calib images"))
    return variants


def outputs(engine, images: np.ndarray, calibration: Calibration) -> np.ndarray:
    """The served (calibrated) probabilities of every image."""
    probs = [
        calibration.probabilities(engine.run(images[i : i + 32])[0])
        for i in range(0, len(images), 32)
    ]
    return np.concatenate(probs)


def time_calls(engine, x: np.ndarray, seconds: float) -> list[float]:
    laps, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        engine.run(x)
        laps.append(time.perf_counter() - start)
    return laps


def predict_latency(
    bundle: Bundle, engine, files: list[Path], explain: bool, n: int, tta: bool = False
) -> float:
    """Median ms of `Predictor.predict(jpeg)`, decoding, preprocessing and OOD included."""
    from dermalens.runtime.predictor import Predictor

    predictor = Predictor(bundle, backend="onnx" if bundle.has(ONNX) else "auto", tta=tta)
    predictor.engine = engine
    laps = []
    for f in files[:5]:
        predictor.predict(f, explain=explain)
    for i in range(n):
        start = time.perf_counter()
        predictor.predict(files[i % len(files)], explain=explain)
        laps.append(time.perf_counter() - start)
    return float(np.median(laps) * 1e3)


def flops_per_image(path: Path, height: int, width: int) -> float:
    """2 x multiply-accumulates of every Conv and Gemm, from the graph at batch 1."""
    import onnx
    from onnx import shape_inference

    from dermalens.export.graph import freeze_pads

    with tempfile.TemporaryDirectory() as tmp:
        freeze_pads(path, Path(tmp) / "f.onnx", height, width)
        model = onnx.load(str(Path(tmp) / "f.onnx"))
    for inp in model.graph.input:
        inp.type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0.0
    for n in model.graph.node:
        if n.op_type == "Conv":
            w, y = shapes[n.input[1]], shapes[n.output[0]]
            total += 2 * np.prod(y) * np.prod(w[1:])
        elif n.op_type in ("Gemm", "MatMul"):
            a, y = shapes[n.input[0]], shapes[n.output[0]]
            total += 2 * np.prod(y) * a[-1]
    return float(total)


def sgemm_gflops(seconds: float = 2.0) -> float:
    """Measured fp32 matrix-multiply rate of this machine (NumPy's BLAS, all cores)."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        done += 1
    return 2 * 2048**3 * done / (time.perf_counter() - start) / 1e9


def peak_memory_mb(model: str, v: Variant) -> float | None:
    """Peak resident memory of a fresh process that loads the variant and runs batch 32."""
    cmd = [sys.executable, __file__, "--probe", v.kind, str(v.path or ""), model]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def probe(kind: str, path: str, model: str) -> None:
    bundle = load_bundle(model)
    engine = make_engine(bundle, Variant("probe", kind, Path(path) if path else None))
    pre = bundle.preprocessing
    x = np.zeros((32, 3, pre.height, pre.width), np.float32)
    for _ in range(3):
        engine.run(x)
    status = Path("/proc/self/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    print(kb / 1024)


def collect_variants(bundle: Bundle, args, calib: list, tmp: Path) -> list[Variant]:
    from dermalens.export.graph import optimise_onnx

    pre = bundle.preprocessing
    opt = bundle.file(VARIANT_FILE)
    if not opt.is_file():
        opt = optimise_onnx(bundle.file(ONNX), tmp / "opt.onnx", pre.height, pre.width)
    out = [
        Variant("PyTorch eager fp32", "torch", bundle.file("model.pt"), "channels_last"),
        Variant("PyTorch bf16 autocast", "torch-bf16", bundle.file("model.pt")),
        Variant("ORT fp32", "ort", bundle.file(ONNX), "model.onnx as shipped"),
        Variant(
            "ORT fp32, threads sleep",
            "ort",
            bundle.file(ONNX),
            "model.onnx, session.intra_op.allow_spinning=0",
            spinning=False,
        ),
        Variant("ORT fp32 optimised", "ort", opt, "pads frozen, graph saved offline"),
        Variant("ORT fp32 optimised, split", "split", opt, f"{cores()} sessions x 1 thread"),
    ]
    if bundle.has(INT8_FILE):  # built by the library before 2026-12-03
        rec = bundle.info.get("variants", {}).get("int8", {})
        out.append(
            Variant("ORT int8 (bundle)", "ort", bundle.file(INT8_FILE), str(rec.get("config", "")))
        )
        out.append(Variant("ORT int8 (bundle), split", "split", bundle.file(INT8_FILE)))
    if args.int8:
        out += build_int8(bundle, {n: Int8Config.from_name(n) for n in args.int8}, calib, tmp)
    for item in args.onnx:
        name, _, path = item.partition("=")
        out.append(Variant(f"ORT {name}", "ort", Path(path)))
        out.append(Variant(f"ORT {name}, split", "split", Path(path), f"{cores()} x 1 thread"))
    return [v for v in out if v.kind not in ("torch", "torch-bf16") or bundle.has("model.pt")]


def agreement_rows(variants: list[Variant], engines: dict, images, labels, calibration) -> None:
    """Agreement of the answers and max |dp| of the served probabilities against ORT fp32,
    and balanced accuracy of the answers, per variant."""
    from sklearn.metrics import balanced_accuracy_score

    reference = outputs(engines["ORT fp32"], images, calibration)
    ref_answers = calibration.decide(reference)
    for v in variants:
        probs = outputs(engines[v.name], images, calibration)
        answers = calibration.decide(probs)
        top1 = float((answers == ref_answers).mean())
        worst = float(np.abs(probs - reference).max())
        v.results = {
            "top1_agreement": top1,
            "max_abs_prob_diff": worst,
            "meets_threshold": top1 >= TOP1_MIN and worst <= MAX_PROB_DIFF,
            "balanced_accuracy": float(balanced_accuracy_score(labels, answers)),
            "size_mb": v.path.stat().st_size / 2**20 if v.path else None,
        }


def speed_rows(variants, engines, images, seconds: float, rounds: int, roofline: float) -> None:
    """Images/s and per-call latency at each batch size, variants alternating per round."""
    laps: dict = {(v.name, b): [] for v in variants for b in BATCHES}
    for _ in range(rounds):
        for v in variants:
            for b in BATCHES:
                x = np.ascontiguousarray(np.resize(images, (b, *images.shape[1:])))
                engines[v.name].run(x)  # warm
                laps[v.name, b] += time_calls(engines[v.name], x, seconds)
    for v in variants:
        for b in BATCHES:
            t = np.array(laps[v.name, b])
            rate = b * len(t) / t.sum()
            v.results[f"batch{b}"] = {
                "images_per_s": rate,
                "p50_ms": float(np.percentile(t, 50) * 1e3),
                "p99_ms": float(np.percentile(t, 99) * 1e3),
                "roofline_ratio": rate / roofline,
            }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?")
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data" / "ham10000"))
    p.add_argument("--split-file", type=Path, help="default: split.csv beside the bundle")
    p.add_argument("--split", default="test", help="held-out part of the split")
    p.add_argument("--int8", nargs="*", default=[], help="extra int8 configs, e.g. entropy-qdq")
    p.add_argument("--onnx", nargs="*", default=[], help="more ONNX files: NAME=PATH")
    p.add_argument("--limit", type=int, default=0, help="use only this many held-out images")
    p.add_argument("--calib", type=int, default=512, help="calibration images (train split)")
    p.add_argument("--seconds", type=float, default=2.0, help="per variant, batch and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--latency-calls", type=int, default=200)
    p.add_argument("--ghz", type=float, default=2.7, help="clock for the roofline")
    p.add_argument("--flop-per-cycle", type=float, default=64, help="per core, fp32")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.probe:
        probe(args.probe[0], args.probe[1], args.model)
        return 0
    bundle = load_bundle(args.model)
    if bundle.is_ensemble:
        sys.exit(
            f"{bundle.path} is an ensemble: speed.py compares the variants of one network; "
            f"run it on each member (members/ inside the folder)"
        )
    split_file = args.split_file or bundle.path.parent / "split.csv"
    table, train = held_out(args.data, split_file, args.split)
    table = table[table["label"].isin(bundle.classes)].reset_index(drop=True)
    if args.limit:  # smoke runs
        table = table.head(args.limit)
    files = [Path(f) for f in table["path"]]
    labels = table["label"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy()
    calib = list(train["path"].sample(min(args.calib, len(train)), random_state=0))
    images = np.concatenate(list(batches(files, bundle, 64)))
    pre = bundle.preprocessing
    flops = flops_per_image(bundle.file(ONNX), pre.height, pre.width)
    roofline = cores() * args.ghz * 1e9 * args.flop_per_cycle / flops
    print(f"{len(files)} held-out images; {flops / 1e9:.3f} GFLOP/image; roofline {roofline:.0f}/s")
    report = {
        "created": now(),
        "machine": machine(),
        "model": bundle.version,
        "held_out": {"split_file": str(split_file), "split": args.split, "images": len(files)},
        "gflop_per_image": flops / 1e9,
        "roofline_images_per_s": roofline,
        "roofline_assumes": f"{cores()} cores x {args.ghz} GHz x {args.flop_per_cycle} FLOP/cycle",
        "sgemm_gflops_measured": sgemm_gflops(),
        "thresholds": {"top1_agreement": TOP1_MIN, "max_abs_prob_diff": MAX_PROB_DIFF},
        "variants": [],
    }
    with tempfile.TemporaryDirectory(prefix="dermalens-speed-") as tmp:
        variants = collect_variants(bundle, args, calib, Path(tmp))
        engines = {v.name: make_engine(bundle, v) for v in variants}
        agreement_rows(variants, engines, images, labels, Calibration.of(bundle))
        speed_rows(variants, engines, images, args.seconds, args.rounds, roofline)
        jpegs = files[:50]
        for v in variants:
            for key, explain in (("predict_p50_ms", False), ("predict_heatmap_p50_ms", True)):
                v.results[key] = predict_latency(
                    bundle, engines[v.name], jpegs, explain, args.latency_calls
                )
            v.results["peak_rss_mb"] = peak_memory_mb(str(bundle.path), v)
            report["variants"].append({"name": v.name, "kind": v.kind, "note": v.note, **v.results})
            print(row(report["variants"][-1]), flush=True)
        fp32 = next(v for v in variants if v.name == "ORT fp32")
        report["tta_predict_p50_ms"] = {
            "variant": fp32.name,
            "without": fp32.results["predict_p50_ms"],
            "with": predict_latency(
                bundle, engines[fp32.name], jpegs, False, args.latency_calls, tta=True
            ),
        }
        report["folder"] = folder_throughput(bundle, variants, files)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"written {args.out}")
    return 0


def folder_throughput(bundle: Bundle, variants: list[Variant], files: list[Path]) -> list[dict]:
    """`predict_folder` over the held-out files, from disk, with the fastest ONNX variant
    that meets the thresholds, on one session and split over the cores."""
    from dermalens.runtime.engines import OnnxEngine
    from dermalens.runtime.folder import predict_folder
    from dermalens.runtime.predictor import Predictor

    ok = [v for v in variants if v.results["meets_threshold"] and v.kind in ("ort", "split")]
    best = max(ok, key=lambda v: v.results["batch32"]["images_per_s"])
    bench = best.results["batch32"]["images_per_s"]
    predictor = Predictor(bundle, backend="onnx")
    out = []
    for sessions, spinning in ((1, True), (cores(), True), (1, False), (cores(), False)):
        predictor.engine = OnnxEngine(bundle, path=str(best.path), spinning=spinning)
        start = time.perf_counter()
        if sessions > 1:
            predictor.engine = split_engine(predictor.engine, sessions)
        items = predict_folder(predictor, files, progress=False)
        n = sum(1 for item in items if item.prediction)
        rate = n / (time.perf_counter() - start)
        out.append(
            {
                "file": best.path.name,
                "benchmark_variant": best.name,
                "sessions": sessions,
                "spinning": spinning,
                "images": n,
                "images_per_s": rate,
                "share_of_benchmark": rate / bench,
            }
        )
    return out


def row(r: dict) -> str:
    b1, b32 = r["batch1"], r["batch32"]
    cells = [
        r["name"],
        f"{b1['images_per_s']:.0f}",
        f"{b1['p50_ms']:.2f} / {b1['p99_ms']:.2f}",
        f"{b32['images_per_s']:.0f}",
        f"{b32['p50_ms']:.1f} / {b32['p99_ms']:.1f}",
        f"{b32['roofline_ratio']:.2f}",
        f"{r['predict_p50_ms']:.2f} / {r['predict_heatmap_p50_ms']:.2f}",
        f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "?",
        f"{r['size_mb']:.1f}" if r["size_mb"] else "-",
        f"{100 * r['top1_agreement']:.2f}",
        f"{r['max_abs_prob_diff']:.4f}",
        f"{r['balanced_accuracy']:.4f}",
        "yes" if r["meets_threshold"] else "**no**",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = [
    "variant",
    "b1 img/s",
    "b1 p50 / p99 ms",
    "b32 img/s",
    "b32 p50 / p99 ms",
    "b32 / roofline",
    "predict() p50 ms (+heatmap)",
    "peak RSS MB",
    "size MB",
    "top-1 agree %",
    "max abs dp",
    "bal. acc",
    "meets 0.99 / 0.02",
]


def markdown(report: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += [row(r) for r in report["variants"]]
    tta = report.get("tta_predict_p50_ms")
    if tta:
        lines.append(
            f"\nTest-time augmentation (4 views in one batch), {tta['variant']}: predict() p50 "
            f"{tta['with']:.2f} ms against {tta['without']:.2f} ms without."
        )
    for f in report.get("folder") or []:
        lines.append(
            f"\nFolder pipeline ({f['file']}, {f['sessions']} session(s), "
            f"{'spinning' if f.get('spinning', True) else 'threads sleep'}, {f['images']} images "
            f"from disk): {f['images_per_s']:.0f} images/s = "
            f"{100 * f['share_of_benchmark']:.0f} % of {f['benchmark_variant']} at batch 32."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
