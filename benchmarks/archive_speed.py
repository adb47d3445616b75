"""Archive prediction on Ray Data against `predict_folder`, side by side, in one run.

    python benchmarks/archive_speed.py --images 1000 6000 --rounds 2 --upscale 1024 768

For each `--images` count, takes the first that many HAM10000 JPEGs (sorted by name),
reads them once so both measures find them in the page cache, then alternates, `--rounds`
times: `predict_folder` (decoder threads, every core) and `predict_archive` on a manifest
of the same files into a fresh results folder. The local Ray is started once and timed
apart (on a cluster it is already up), and one tiny job first starts Ray Data's own helper
actors; each archive time still counts its actors' start-up (each loads the bundle), the
reads, the model and the Parquet writes. `--upscale W H` repeats the last count on copies
re-encoded at W x H, for the decoding cost of full-size archive images. Memory per actor
is the peak RSS and PSS (shared pages split between the processes that map them) of the
classifier's Ray worker processes, sampled every 0.2 s. Prints the CPU, the load average,
Markdown tables, and a plan for a cluster from the measured rate per core. Both sides run
the one model without the scope gate (`predict_archive(gate=False)`), as they did before it.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dermalens.bundle import default_model_path
from dermalens.runtime.archive import predict_archive, start_ray
from dermalens.runtime.engines import cores
from dermalens.runtime.folder import predict_folder
from dermalens.runtime.predictor import Predictor

HAM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/data/ham10000/images"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())  # 1, 5 and 15 minutes


def _kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


class WorkerMemory(threading.Thread):
    """Peak RSS and PSS (MiB) of each Ray worker process that runs the classifier."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peak: dict[int, tuple[float, float]] = {}

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
                    if "Classifier" not in cmdline:
                        continue
                    rss = _kib(proc / "status", "VmRSS:") / 1024
                    pss = _kib(proc / "smaps_rollup", "Pss:") / 1024
                except OSError:  # the process ended between the listing and the read
                    continue
                old = self.peak.get(int(proc.name), (0.0, 0.0))
                self.peak[int(proc.name)] = (max(old[0], rss), max(old[1], pss))


def folder_rate(predictor: Predictor, files: list[Path]) -> float:
    start = time.perf_counter()
    done = sum(1 for item in predict_folder(predictor, files, progress=False) if item.prediction)
    assert done == len(files), f"{len(files) - done} images failed"
    return done / (time.perf_counter() - start)


def archive_rate(manifest: Path, out: Path, model: Path, batch_size: int, actors: int):
    memory = WorkerMemory()
    memory.start()
    start = time.perf_counter()
    # one model, no scope gate: the same work as `predict_folder` with that Predictor
    summary = predict_archive(
        manifest, out, model, batch_size=batch_size, actors=actors, gate=False
    )
    seconds = time.perf_counter() - start
    memory.stop.set()
    memory.join()
    assert summary.written == summary.rows and summary.errors == 0, summary
    return summary.written / seconds, summary.actors, list(memory.peak.values())


def upscaled(files: list[Path], size: tuple[int, int], folder: Path) -> list[Path]:
    """Copies at `size` (JPEG quality 90): the decoding cost of full-size archive images."""
    folder.mkdir()
    out = []
    for f in files:
        target = folder / f.name
        Image.open(f).resize(size, Image.BICUBIC).save(target, quality=90)
        out.append(target)
    return out


def measure(files, tmp, args, tag) -> tuple[list[float], list[float], list]:
    manifest = tmp / f"manifest-{tag}.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["path"], *([str(x)] for x in files)])
    megabytes = sum(len(f.read_bytes()) for f in files) / 2**20  # warm the page cache
    width, height = Image.open(files[0]).size
    print(f"\n{len(files)} JPEGs of {width}x{height} ({megabytes:.0f} MiB)")
    print("| round | predict_folder images/s | Ray Data images/s | ratio | actors | load |")
    print("|---|---|---|---|---|---|")
    predictor = Predictor(args.model, backend="onnx", precision="fp32")
    ratios, rates, memories = [], [], []
    for round_ in range(args.rounds):
        folder = folder_rate(predictor, files)
        out = tmp / f"results-{tag}-{round_}"
        archive, actors, memory = archive_rate(
            manifest, out, args.model, args.batch_size, args.actors
        )
        ratios.append(archive / folder)
        rates.append(archive)
        memories += memory
        print(
            f"| {round_} | {folder:.0f} | {archive:.0f} | {archive / folder:.2f} | {actors} "
            f"| {os.getloadavg()[0]:.2f} |",
            flush=True,
        )
    print(f"ratio: mean {np.mean(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")
    return ratios, rates, memories


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, nargs="+", default=[1000], help="one run per count")
    p.add_argument("--folder", type=Path, default=HAM_IMAGES)
    p.add_argument("--model", type=Path, default=default_model_path())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--actors", type=int, default=0, help="0: one per core")
    p.add_argument(
        "--upscale",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        help="also time the last count's images re-encoded at W x H",
    )
    args = p.parse_args(argv)
    import ray  # the scale extra

    files = sorted(args.folder.glob("*.jpg"))
    if len(files) < max(args.images):
        print(f"only {len(files)} images in {args.folder}", file=sys.stderr)
        return 1
    print(f"CPU: {cpu_model()}, {cores()} cores; load average before: {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="archive-speed-"))
    start = time.perf_counter()
    start_ray(None)
    print(f"local Ray start: {time.perf_counter() - start:.1f} s (not in the rates below)")
    # Ray Data starts its own helper actors on a session's first job: not in the rates
    warm = tmp / "warm-up.csv"
    warm.write_text(f"path\n{files[0]}\n")
    predict_archive(warm, tmp / "warm-up", args.model, gate=False)
    steady, memories = None, []
    for n in args.images:
        _, rates, memory = measure(files[:n], tmp, args, str(n))
        steady, memories = float(np.mean(rates)), memories + memory
    if args.upscale:
        big = upscaled(files[: args.images[-1]], tuple(args.upscale), tmp / "upscaled")
        _, rates, memory = measure(big, tmp, args, "upscaled")
        memories += memory
        per_core = float(np.mean(rates)) / cores()
        print(f"at {args.upscale[0]}x{args.upscale[1]}: {per_core:.0f} images/s per core")
    if memories:
        rss, pss = np.array(memories).max(axis=0)
        print(f"\nmemory per actor (peak): RSS {rss:.0f} MiB, PSS {pss:.0f} MiB")
    per_core = steady / cores()
    need = 1_000_000 / 3600 / per_core
    print(
        f"plan: {per_core:.0f} images/s per core here ({args.images[-1]} images); "
        f"1,000,000 images in an hour need {1_000_000 / 3600:.0f} images/s, about "
        f"{need:.1f} such cores (before any margin)"
    )
    print(f"load average after: {load()}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
