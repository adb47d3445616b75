"""Weight averaging of a run's epoch snapshots ("model soups", Wortsman et al. 2022).

A run trained with `snapshots=True` keeps each epoch's weights (the EMA's when on) in
`RUN/snapshots/eNN.pt`. `build_soup` averages chosen snapshots into one ordinary bundle:

- `epochs=[...]`: a uniform average of those epochs (one epoch gives that epoch's model);
- `greedy=True`: snapshots in order of their validation balanced accuracy, each added only
  if the average's validation balanced accuracy does not fall (the greedy soup).

Only the validation part is used to choose; the test part is recorded once, at the end.
The soup costs no more at inference than one model. BatchNorm statistics are averaged
with the weights, not recomputed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dermalens.bundle import Bundle, load_bundle
from dermalens.config import ConfigError, config_from_dict
from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import check_not_trained_on, load_split
from dermalens.errors import DataError
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.evaluation.evaluate import evaluate_table
from dermalens.networks import build_model
from dermalens.preprocess import Preprocessing
from dermalens.training.package import bundle_from_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    epoch: int  # 1-based, as logged
    path: Path
    val_balanced_accuracy: float
    state: dict = field(repr=False, compare=False)  # weights, config, classes, ...


def list_snapshots(run: str | Path) -> list[Snapshot]:
    """A run's snapshots in epoch order, each read once; a clear error when there are none."""
    folder = Path(run) / "snapshots"
    paths = sorted(folder.glob("e*.pt"))
    if not paths:
        raise ConfigError(
            f"{run}: no epoch snapshots in {folder}; train with snapshots=True to keep them"
        )
    out = []
    for path in paths:
        state = _load(path)
        val = state["val"]["val_balanced_accuracy"]
        out.append(Snapshot(state["epoch"] + 1, path, val, state))
    return out


def _load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or foreign file
        raise DataError(f"{path}: not a readable snapshot ({exc})") from exc
    if not isinstance(state, dict) or not {"model", "epoch", "val", "config"} <= set(state):
        raise DataError(f"{path}: not a dermalens epoch snapshot")
    return state


def average_weights(states: list[dict]) -> dict:
    """Uniform mean of floating tensors; integer buffers (BatchNorm counters) from the last."""
    if not states:
        raise ValueError("nothing to average")
    keys = states[0].keys()
    for state in states[1:]:
        if state.keys() != keys:
            raise DataError("snapshots of different architectures cannot be averaged")
    out = {}
    for key in keys:
        values = [s[key] for s in states]
        if values[0].is_floating_point():
            out[key] = torch.stack([v.float() for v in values]).mean(0).to(values[0].dtype)
        else:
            out[key] = values[-1].clone()
    return out


class _Builder:
    """Writes soups of one run's snapshots as bundles and scores them on validation."""

    def __init__(self, run: Path, data: str | None, split_file: str | Path | None):
        self.run = run
        self.snapshots = {s.epoch: s for s in list_snapshots(run)}
        first = next(iter(self.snapshots.values())).state
        self.cfg = config_from_dict(first["config"])
        self.classes = first["classes"]
        self.weight_source = first.get("weight_source", "")
        self.data = data or self.cfg.data
        self.split_file = Path(split_file) if split_file else run / "split.csv"
        if not self.split_file.is_file():
            raise ConfigError(f"split file {self.split_file} not found")
        dataset = load_dataset(self.data)
        self.source = dataset.source
        table = load_split(dataset, self.split_file)
        own = run / "split.csv"
        if own.is_file() and own.resolve() != self.split_file.resolve():
            check_not_trained_on(load_split(dataset, own), table, own, self.split_file)
        table = drop_duplicate_extras(table)
        self.val = table[table["split"] == "val"]
        if self.val.empty:
            raise DataError(f"{self.split_file}: no val part to choose snapshots on")
        self.pre = Preprocessing(
            height=self.cfg.height, width=self.cfg.width, color_constancy=self.cfg.color_constancy
        )

    def write(self, epochs: list[int], target: Path, steps: list[dict] | None = None) -> Bundle:
        """The average of `epochs` as a bundle at `target` (`steps`: the greedy log)."""
        missing = sorted(set(epochs) - set(self.snapshots))
        if missing:
            raise ConfigError(
                f"{self.run}: no snapshot for epoch(s) {missing}; it has {sorted(self.snapshots)}"
            )
        cfg = self.cfg
        model, _ = build_model(
            cfg.model,
            len(self.classes),
            "none",
            cfg.drop_rate,
            cfg.use_metadata,
            cfg.metadata_fields,
        )
        weights = average_weights([self.snapshots[e].state["model"] for e in epochs])
        model.load_state_dict(weights)
        bundle = bundle_from_model(
            model.eval(),
            target,
            self.classes,
            self.pre,
            cfg,
            self.weight_source,
            source=self.source,
        )
        bundle.info["soup"] = {"run": str(self.run), "epochs": sorted(epochs)}
        if steps is not None:
            bundle.info["soup"]["greedy_steps"] = steps
        bundle.save_description()
        return bundle

    def score(self, epochs: list[int], scratch: Path) -> float:
        bundle = self.write(epochs, scratch / "candidate")
        result = evaluate_table(bundle, self.val, None, progress=self.cfg.progress)
        return float(result.metrics["balanced_accuracy"])


def greedy_epochs(builder: _Builder) -> tuple[list[int], list[dict]]:
    """The greedy soup's epochs, and a log of each step (epoch tried, val score, kept)."""
    order = sorted(builder.snapshots.values(), key=lambda s: (-s.val_balanced_accuracy, s.epoch))
    scratch = Path(tempfile.mkdtemp(prefix="dermalens-soup-"))
    try:
        chosen = [order[0].epoch]
        best = builder.score(chosen, scratch)
        steps = [{"epochs": list(chosen), "val_balanced_accuracy": best, "kept": True}]
        for snap in order[1:]:
            trial = chosen + [snap.epoch]
            score = builder.score(trial, scratch)
            kept = score >= best
            steps.append({"epochs": trial, "val_balanced_accuracy": score, "kept": kept})
            log.info("soup %s: val bal acc %.4f %s", trial, score, "kept" if kept else "")
            if kept:
                chosen, best = trial, score
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sorted(chosen), steps


def build_soup(
    run: str | Path,
    out: str | Path,
    epochs: list[int] | None = None,
    greedy: bool = False,
    data: str | None = None,
    split_file: str | Path | None = None,
    calibrate: bool = True,
) -> Bundle:
    """Average a run's snapshots into a bundle at `out`; calibrate on val and record test."""
    if bool(epochs) == bool(greedy):
        raise ConfigError("give either epochs to average or greedy=True, not both or neither")
    run = Path(run)
    builder = _Builder(run, data, split_file)
    steps = None
    if greedy:
        epochs, steps = greedy_epochs(builder)
    bundle = builder.write(list(epochs), Path(out), steps)
    if calibrate:
        calibrate_bundle(
            bundle.path,
            builder.data,
            builder.split_file,
            out_dir=Path(out).with_name(f"{Path(out).name}-calibration"),
            progress=builder.cfg.progress,
            record_test=True,
        )
        bundle = load_bundle(bundle.path)
    return bundle
