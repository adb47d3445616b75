"""In-process cost of one prediction request, this checkout against a git revision.

    PYTHONPATH=$PWD/src python benchmarks/request_path.py --against main --images 40 --rounds 5

Copies `src/dermalens` at `--against` into a temporary folder as the package
`dermalens_before` (imports renamed, the bundled models shared unless `--own-bundled`),
loads both versions in one process and, on the same decoded HAM10000 images:

1. checks that both give the same `Prediction` (JSON of `to_dict(heatmap=True)`, timings
   aside) for every image, with and without the heatmap;
2. times `Router.predict(image, 3, explain=True)` (the service's call), the versions
   alternating round by round, with each version's steps timed apart (wrappers around
   `prepare`, `forward`, the router's `decide` and `predict_input`), ONNX Runtime's
   threads spinning or not (`--spinning`; the service's default is now false);
3. with `--app`, times POST /api/v1/predictions?explain=true&overlay=false through each
   version's app (`TestClient`, one client, a fresh SQLite folder each, each version's
   default settings), alternating too;
4. with `--threads N`, predictions per second with N threads calling `Router.predict`.

Only ratios within one run mean much on a shared machine; the JSON (`--out`) records the
CPU and the load average.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "dermalens_before"
PHASES = ("prepare", "forward", "decide", "predict_input")


def copy_revision(revision: str, into: Path, own_bundled: bool = False) -> None:
    """`src/dermalens` at `revision` as the package `dermalens_before` under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src/dermalens"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    package = into / BEFORE
    (into / "src" / "dermalens").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bdermalens\b(?=\.|\s+import)", BEFORE, text))
    if own_bundled:  # the revision's own models (e.g. a gate file format it can read)
        return
    bundled = package / "bundled"
    if bundled.exists():  # the same models for both versions
        subprocess.run(["rm", "-rf", str(bundled)], check=True)
    bundled.symlink_to(ROOT / "src" / "dermalens" / "bundled")


def timed(owner, name: str, totals: dict[str, float]) -> None:
    """Wrap `owner.name` (an instance's method) to add its wall time to `totals[name]`."""
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)


def comparable(prediction) -> str:
    out = prediction.to_dict(heatmap=True)
    out.pop("timings_ms")
    return json.dumps(out, sort_keys=True, default=str)


def router_rounds(routers: dict, images: list, rounds: int) -> dict:
    """ms per call of `Router.predict` and of its steps, the versions alternating."""
    phases = {name: {} for name in routers}
    totals = {name: 0.0 for name in routers}
    for name, router in routers.items():
        timed(router.feature, "prepare", phases[name])
        timed(router.feature, "forward", phases[name])
        timed(router, "decide", phases[name])
        timed(router.feature, "predict_input", phases[name])
    for round_ in range(rounds + 1):
        order = list(routers) if round_ % 2 else list(routers)[::-1]
        for name in order:
            if round_ == 0:  # warm-up
                for image in images[:8]:
                    routers[name].predict(image, 3, True)
                phases[name].clear()
                continue
            t0 = time.perf_counter()
            for image in images:
                routers[name].predict(image, 3, True)
            totals[name] += time.perf_counter() - t0
    calls = rounds * len(images)
    return {
        name: {
            "predict_ms": round(totals[name] / calls * 1e3, 3),
            **{f"{p}_ms": round(phases[name].get(p, 0.0) / calls * 1e3, 3) for p in PHASES},
        }
        for name in routers
    }


def app_rounds(modules: dict, blobs: list[bytes], rounds: int) -> dict:
    """ms per POST through each version's app, one client, the versions alternating."""
    from fastapi.testclient import TestClient

    clients, stack = {}, []
    for name, prefix in modules.items():
        app = importlib.import_module(f"{prefix}.serve.app")
        settings = importlib.import_module(f"{prefix}.serve.settings").Settings(
            model=ROOT / "src/dermalens/bundled/default",
            data_dir=tempfile.mkdtemp(prefix=f"request-path-{name}-"),
            anonymous_rate_limit="",
        )
        client = TestClient(app.create_app(settings))
        stack.append(client.__enter__())
        clients[name] = client
    totals = {name: 0.0 for name in modules}
    url = "/api/v1/predictions?explain=true&overlay=false"
    try:
        for round_ in range(rounds + 1):
            for name in list(clients) if round_ % 2 else list(clients)[::-1]:
                t0 = time.perf_counter()
                for blob in blobs if round_ else blobs[:8]:
                    response = clients[name].post(url, files={"file": ("x.jpg", blob)})
                    assert response.status_code == 201, response.text
                    response.json()
                if round_:
                    totals[name] += time.perf_counter() - t0
    finally:
        for client in clients.values():
            client.__exit__(None, None, None)
    return {name: round(t / (rounds * len(blobs)) * 1e3, 3) for name, t in totals.items()}


def throughput(router, images: list, threads: int, calls: int) -> float:
    """Predictions per second with `threads` threads sharing one router."""
    todo = iter(range(calls))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                j = next(todo, None)
            if j is None:
                return
            router.predict(images[j % len(images)], 3, True)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t0 = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return round(calls / (time.perf_counter() - t0), 2)


def cpu() -> str:
    lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    return next((ln.split(":", 1)[1].strip() for ln in lines if "Model name" in ln), "")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ham10000")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", action="store_true", help="also time the API through the app")
    parser.add_argument("--threads", type=int, default=0, help="also time N threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--spinning", choices=("true", "false"), default="true", help="routers' ORT threads"
    )
    parser.add_argument(
        "--own-bundled",
        action="store_true",
        help="the revision keeps its own bundled models (needed where their formats differ)",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    ids = pd.read_csv(args.data / "metadata.csv")["image_id"].to_numpy()
    ids = np.random.default_rng(args.seed).choice(ids, args.images, replace=False)
    paths = [args.data / "images" / f"{i}.jpg" for i in ids]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        copy_revision(args.against, Path(folder), args.own_bundled)
        sys.path.insert(0, folder)
        modules = {"before": BEFORE, "after": "dermalens"}
        spinning = args.spinning == "true"

        def router(prefix: str):
            return importlib.import_module(f"{prefix}.runtime.router").Router.installed(
                spinning=spinning
            )

        routers = {name: router(prefix) for name, prefix in modules.items()}
        load_image = importlib.import_module("dermalens.imageio").load_image
        images = [load_image(p, draft_size=routers["after"].decode_size) for p in paths]
        different = [
            str(p)
            for p, image in zip(paths, images)
            for explain in (True, False)
            if len({comparable(r.predict(image, 3, explain)) for r in routers.values()}) > 1
        ]
        report = {
            "command": " ".join(sys.argv),
            "cpu": cpu(),
            "cores": len(os.sched_getaffinity(0)),
            "against": args.against,
            "images": len(images),
            "rounds": args.rounds,
            "router_spinning": spinning,
            "different_predictions": different,
            "router": router_rounds(routers, images, args.rounds),
        }
        if args.threads:
            fresh = {name: router(prefix) for name, prefix in modules.items()}
            runs = {name: [] for name in modules}
            for name in ["before", "after"] * 2:  # alternating, twice
                runs[name].append(throughput(fresh[name], images, args.threads, 6 * len(images)))
            report[f"predictions_per_s_{args.threads}_threads"] = runs
        if args.app:
            blobs = [p.read_bytes() for p in paths]
            report["app_post_ms"] = app_rounds(modules, blobs, args.rounds)
    report["load_average"] = {"before_run": load_before, "after_run": os.getloadavg()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
