"""Archive prediction on Ray Data against `predict_folder`, side by side, in one run.

    python benchmarks/archive_speed.py --images 1000 --rounds 2

Takes the first `--images` HAM10000 JPEGs (sorted by name), reads them once so both
measures find them in the page cache, then alternates, `--rounds` times:
`predict_folder` (decoder threads, every core) and `predict_archive` on a manifest of the
same files into a fresh results folder, with the local Ray already running (started once
and timed apart: on a cluster it is already up), so each archive time counts the actors'
start-up (each loads the bundle), the reads, the model and the Parquet writes. Memory per
actor is the peak RSS and PSS (shared pages split between the processes that map them)
of the Ray worker processes, sampled every 0.2 s. Prints the CPU, the load average before
and after, a Markdown table, and a plan for a cluster from the measured rate per core.
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
    summary = predict_archive(manifest, out, model, batch_size=batch_size, actors=actors)
    seconds = time.perf_counter() - start
    memory.stop.set()
    memory.join()
    assert summary.written == summary.rows and summary.errors == 0, summary
    return summary.written / seconds, summary.actors, list(memory.peak.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--folder", type=Path, default=HAM_IMAGES)
    p.add_argument("--model", type=Path, default=default_model_path())
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--actors", type=int, default=0, help="0: one per core")
    args = p.parse_args(argv)
    import ray  # the scale extra

    files = sorted(args.folder.glob("*.jpg"))[: args.images]
    if len(files) < args.images:
        print(f"only {len(files)} images in {args.folder}", file=sys.stderr)
        return 1
    megabytes = sum(len(f.read_bytes()) for f in files) / 2**20  # warm the page cache
    print(f"CPU: {cpu_model()}, {cores()} cores; {len(files)} JPEGs ({megabytes:.0f} MiB)")
    print(f"load average before: {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="archive-speed-"))
    manifest = tmp / "manifest.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["path"], *([str(x)] for x in files)])
    predictor = Predictor(args.model, backend="onnx", precision="fp32")
    start = time.perf_counter()
    start_ray(None)
    print(f"local Ray start: {time.perf_counter() - start:.1f} s (not in the rates below)")
    print("\n| round | predict_folder images/s | Ray Data images/s | ratio | actors |")
    print("|---|---|---|---|---|")
    ratios, rates, memories = [], [], []
    for round_ in range(args.rounds):
        folder = folder_rate(predictor, files)
        out = tmp / f"results-{round_}"
        archive, actors, memory = archive_rate(
            manifest, out, args.model, args.batch_size, args.actors
        )
        ratios.append(archive / folder)
        rates.append(archive)
        memories += memory
        print(f"| {round_} | {folder:.0f} | {archive:.0f} | {archive / folder:.2f} | {actors} |")
    print(f"\nratio: mean {np.mean(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")
    if memories:
        rss, pss = np.array(memories).max(axis=0)
        print(f"memory per actor (peak): RSS {rss:.0f} MiB, PSS {pss:.0f} MiB")
    per_core = float(np.mean(rates)) / cores()
    need = 1_000_000 / 3600 / per_core
    print(
        f"plan: {per_core:.0f} images/s per core here; 1,000,000 images in an hour need "
        f"{1_000_000 / 3600:.0f} images/s, about {need:.0f} such cores (before any margin)"
    )
    print(f"load average after: {load()}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
