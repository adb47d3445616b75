"""The pieces of a training run that are not the run itself: the learning-rate schedule,
class weights, atomic checkpoint writes and an evaluation pass over a loader."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dermalens.config import TrainConfig


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


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader, cfg: TrainConfig, desc: str = "eval"):
    """Softmax probabilities and labels over a loader (eval mode)."""
    model.eval()
    probs, labels = [], []
    for x, meta, y in tqdm(loader, desc=desc, leave=False, disable=not cfg.progress):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(x, meta if cfg.use_metadata else None)
        probs.append(logits.float().softmax(1).numpy())
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
