"""Latency of `POST /api/v1/predictions` under concurrent clients, with and without the heatmap.

    python benchmarks/load.py --data ../shared/data/ham10000 --out benchmarks/results/load.json

Starts the real app (`uvicorn --factory dermalens.serve.app:create_app`) in a subprocess on
127.0.0.1 (loopback only, a fresh data folder), then uploads HAM10000 JPEGs from 1 and from
8 client threads, each with its own keep-alive connection, for three variants of the call:

- `off`:  `explain=false`, no heatmap;
- `png`:  `explain=true` (the default call): the PNG overlay (`heatmap.image`) and the grid;
- `grid`: `explain=true&overlay=false`: only the small CAM grid (`heatmap.grid`), which
  the page colours on a canvas.

Bounded: `--requests` per variant at 8 clients and `--single` at 1 client, split over
`--rounds` rounds in which the variants take turns (rotated each round), so a neighbour's
job on a shared machine slows all variants alike; `--time-cap` seconds stops it early
(the JSON says so). A request counts as an error unless it answers 201 with the heatmap
the variant asked for. Latency is measured by the client, including reading the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"off": "explain=false", "png": "explain=true", "grid": "explain=true&overlay=false"}
CLIENTS = (1, 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: Path, data_dir: Path, threads: int, workers: int = 1
) -> tuple[subprocess.Popen, str]:
    """The real app in its own process (its GIL is not the clients'), on a free local port;
    `workers` > 1: that many uvicorn worker processes."""
    port = free_port()
    env = {
        **os.environ,
        "DERMALENS_MODEL": str(model),
        "DERMALENS_DATA_DIR": str(data_dir),
        "DERMALENS_THREADS": str(threads),
        "DERMALENS_WORKERS": str(workers),  # for the thread share; uvicorn starts them
        "DERMALENS_ANONYMOUS_RATE_LIMIT": "",  # every request comes from one address here
        "PYTHONPATH": str(ROOT / "src"),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "dermalens.serve.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--workers", str(workers)] if workers > 1 else []
    server = subprocess.Popen(command, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server was not ready within 120 s")


def pick_images(data: Path, count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` HAM10000 JPEGs (seeded), read once so the clients measure only the service."""
    ids = pd.read_csv(data / "metadata.csv")["image_id"].to_numpy()
    chosen = np.random.default_rng(seed).choice(ids, size=min(count, len(ids)), replace=False)
    return [(f"{i}.jpg", (data / "images" / f"{i}.jpg").read_bytes()) for i in chosen]


def answer_ok(response: httpx.Response, variant: str) -> bool:
    """201 with the heatmap this variant asked for (and none when it asked for none)."""
    if response.status_code != 201:
        return False
    heatmap = response.json()["heatmap"]
    if variant == "off":
        return heatmap is None
    if heatmap is None or len(heatmap["grid"]) != heatmap["shape"][0]:
        return False
    return (heatmap["image"] is not None) == (variant == "png")


def phase(base: str, images, variant: str, clients: int, count: int, start: int) -> list[dict]:
    """`count` requests from `clients` threads, each with its own connection."""
    url = f"{base}/api/v1/predictions?{VARIANTS[variant]}"
    records: list[dict] = []
    lock = threading.Lock()
    next_index = iter(range(start, start + count))

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                name, data = images[index % len(images)]
                t0 = time.perf_counter()
                try:
                    response = http.post(url, files={"file": (name, data, "image/jpeg")})
                    ok = answer_ok(response, variant)  # reads the JSON: part of the latency
                    size, server_ms = len(response.content), None
                    if response.status_code == 201:
                        server_ms = response.json()["timings_ms"].get("total")
                except httpx.HTTPError:
                    ok, size, server_ms = False, 0, None
                seconds = time.perf_counter() - t0
                with lock:
                    records.append({"s": seconds, "ok": ok, "bytes": size, "server_ms": server_ms})

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def summary(records: list[dict], wall: float) -> dict:
    ms = np.array([r["s"] for r in records if r["ok"]]) * 1e3
    server = [r["server_ms"] for r in records if r["server_ms"] is not None]
    out = {"requests": len(records), "errors": sum(not r["ok"] for r in records)}
    if len(ms):
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        out.update(p50_ms=p50, p95_ms=p95, p99_ms=p99, mean_ms=ms.mean(), max_ms=ms.max())
        out["server_total_p50_ms"] = float(np.median(server)) if server else None
        out["response_kb"] = float(np.mean([r["bytes"] for r in records])) / 1e3
        out["requests_per_s"] = len(records) / wall if wall > 0 else None
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def machine() -> dict:
    model = platform.processor()
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if "Model name" in ln), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    return {"cpu": model, "cores": cores, "python": platform.python_version()}


def run(args: argparse.Namespace) -> dict:
    images = pick_images(args.data, args.images, args.seed)
    results: dict[str, dict[str, list]] = {
        f"{v}@{c}": {"records": [], "wall": 0.0} for v in VARIANTS for c in CLIENTS
    }
    counts = {1: args.single, 8: args.requests}
    load_before = os.getloadavg()
    capped = False
    with tempfile.TemporaryDirectory() as data_dir:
        server, base = start_server(args.model, Path(data_dir), args.threads, args.workers)
        try:
            for variant in VARIANTS:  # warm-up, not counted
                phase(base, images, variant, 8, 16, 0)
            t_start = time.monotonic()
            order = list(VARIANTS)
            for round_ in range(args.rounds):
                for clients in CLIENTS:
                    for variant in order[round_ % 3 :] + order[: round_ % 3]:
                        if time.monotonic() - t_start > args.time_cap:
                            capped = True
                            break
                        per_round = -(-counts[clients] // args.rounds)
                        t0 = time.perf_counter()
                        cell = results[f"{variant}@{clients}"]
                        cell["records"] += phase(
                            base, images, variant, clients, per_round, per_round * round_
                        )
                        cell["wall"] += time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=30)
    table = {key: summary(cell["records"], cell["wall"]) for key, cell in results.items()}

    def ratio(a: str, b: str, key: str = "p99_ms") -> float | None:
        x, y = table[a].get(key), table[b].get(key)
        return round(x / y, 3) if x and y else None

    return {
        "command": " ".join(sys.argv),
        "machine": {**machine(), "load_before": load_before, "load_after": os.getloadavg()},
        "server_threads": args.threads,
        "server_workers": args.workers,
        "images": len(images),
        "rounds": args.rounds,
        "time_capped": capped,
        "results": table,
        "ratios_p99_at_8": {
            "png/off": ratio("png@8", "off@8"),
            "grid/off": ratio("grid@8", "off@8"),
            "grid/png": ratio("grid@8", "png@8"),
        },
        "goal": {
            "p99_ms_at_8_with_heatmap_max": 150,
            "grid_meets": bool(table["grid@8"].get("p99_ms", 1e9) <= 150)
            and table["grid@8"]["errors"] == 0,
            "png_meets": bool(table["png@8"].get("p99_ms", 1e9) <= 150)
            and table["png@8"]["errors"] == 0,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "src/dermalens/bundled/default")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ham10000")
    parser.add_argument("--images", type=int, default=64, help="distinct images uploaded")
    parser.add_argument("--requests", type=int, default=480, help="per variant, at 8 clients")
    parser.add_argument("--single", type=int, default=120, help="per variant, at 1 client")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--time-cap", type=float, default=600, help="seconds of measuring")
    parser.add_argument("--threads", type=int, default=0, help="server DERMALENS_THREADS")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/load.json")
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, row in report["results"].items():
        print(f"{key:8s} " + " ".join(f"{k}={v}" for k, v in row.items()))
    print("p99 ratios at 8 clients:", report["ratios_p99_at_8"], "goal:", report["goal"])


if __name__ == "__main__":
    main()
