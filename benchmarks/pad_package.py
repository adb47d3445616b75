"""A training run's best checkpoint as a calibrated, exported bundle (a run stopped early).

    python benchmarks/pad_package.py runs/pad-provisional runs/pad-early/bundle

How the first, provisional clinical model was made (replaced on 2026-12-03 by a full
run): its run was stopped after 5 of 8 epochs when CPU time ran out, so the run's own end
(bundle, calibration) never came. This does that end on `best.pt`: the bundle, calibration,
thresholds and OOD fit on the run's validation part (`calibrate_bundle`), then `model.onnx`
and float16 `model.pt`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dermalens.config import config_from_dict
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.export.to_onnx import export_onnx
from dermalens.networks import build_model
from dermalens.preprocess import Preprocessing
from dermalens.training.package import bundle_from_model


def package(run: Path, target: Path, source: str = "pad_ufes20") -> dict:
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    cfg = config_from_dict(state["config"])
    arch = (cfg.drop_rate, cfg.use_metadata, cfg.metadata_fields)
    model, _ = build_model(cfg.model, len(state["classes"]), "none", *arch)
    model.load_state_dict(state.get("ema", state["model"]))
    pre = Preprocessing(height=cfg.height, width=cfg.width, color_constancy=cfg.color_constancy)
    target.parent.mkdir(parents=True, exist_ok=True)
    bundle_from_model(
        model.eval(),
        target,
        state["classes"],
        pre,
        cfg,
        state["weight_source"],
        history=state["history"],
        source=source,
    )
    calibrate_bundle(target, cfg.data, run / "split.csv", "val", run / "calibration-early")
    return export_onnx(target, half_weights=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a training run folder with best.pt")
    p.add_argument("target", type=Path, help="the bundle folder to write")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(package(args.run, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
