"""The pieces of a training run that are not the run itself: the learning-rate schedule,
class weights, checkpoints (atomic writes, resuming), the log, mixed precision and an
evaluation pass over a loader."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dermalens.config import ConfigError, TrainConfig, config_from_dict
from dermalens.evaluation.plots import plot_curves

# A resumed run keeps its settings, except these, when given (not the default): more epochs
# or patience extend a finished or early-stopped run; the others say where and how it runs.
RESUME_OVERRIDES = ("epochs", "patience", "workers", "threads", "progress", "device", "amp")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier on the peak LR: linear warm-up, then cosine / one-cycle / constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    floor = 0.01 if schedule == "cosine" else 0.0004
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def class_weights(labels: np.ndarray, n: int, power: float) -> np.ndarray:
    counts = np.bincount(labels, minlength=n).astype(float)
    weights = (counts.sum() / np.maximum(counts, 1) / n) ** power
    return weights / (weights * counts).sum() * counts.sum()


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def resume_checkpoint(cfg: TrainConfig) -> tuple[TrainConfig, Path, dict]:
    """`resume=` -> the run's own config (with RESUME_OVERRIDES), its folder, last.pt."""
    last = Path(cfg.resume)
    last = last / "last.pt" if last.is_dir() else last
    if not last.is_file():
        raise ConfigError(f"resume={cfg.resume!r}: no last.pt there")
    state = torch.load(last, map_location="cpu", weights_only=False)
    saved = config_from_dict(state["config"])
    defaults = TrainConfig()
    for key in RESUME_OVERRIDES:
        if getattr(cfg, key) != getattr(defaults, key):
            setattr(saved, key, getattr(cfg, key))
    saved.resume = cfg.resume
    return saved, last.parent, state


def save_snapshot(state: dict, row: dict, folder: Path) -> None:
    """This epoch's weights (the EMA's when on) for weight averaging or snapshot ensembles."""
    folder.mkdir(exist_ok=True)
    keep = ("epoch", "config", "classes", "weight_source")
    snapshot = {"model": state.get("ema", state["model"]), "val": row}
    snapshot.update({k: state[k] for k in keep})
    save_atomic(snapshot, folder / f"e{state['epoch'] + 1:02d}.pt")


def write_log(history: list[dict], folder: Path) -> None:
    """log.csv and curves.png of the epochs so far."""
    with open(folder / "log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, folder / "curves.png")


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": torch.bfloat16}


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """Mixed precision of the forward pass: `amp=` on CUDA, `bf16=` on the CPU, none on MPS."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=AMP_DTYPES[cfg.amp], enabled=cfg.amp != "none")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cpu")


def to_device(x: torch.Tensor, meta: torch.Tensor, cfg: TrainConfig, device: torch.device):
    """A batch on the device, images channels-last when the run uses it."""
    x, meta = x.to(device, non_blocking=True), meta.to(device, non_blocking=True)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, meta


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    desc: str = "eval",
    device: torch.device | None = None,
):
    """Softmax probabilities and labels over a loader (eval mode)."""
    device = device or torch.device("cpu")
    model.eval()
    probs, labels = [], []
    for x, meta, y in tqdm(loader, desc=desc, leave=False, disable=not cfg.progress):
        x, meta = to_device(x, meta, cfg, device)
        with autocast(cfg, device):
            logits = model(x, meta if cfg.use_metadata else None)
        probs.append(logits.float().softmax(1).cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(labels), np.concatenate(probs)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, steps: int) -> None:
    """ema <- d * ema + (1 - d) * weights, with d ramping up over the first `steps`."""
    decay = min(decay, (1 + steps) / (10 + steps))
    average, live = ema.state_dict(), model.state_dict()
    for key, value in live.items():
        if value.dtype.is_floating_point:
            average[key].lerp_(value, 1 - decay)
        else:
            average[key].copy_(value)
