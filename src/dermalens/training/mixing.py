"""Mixup and CutMix for training batches: pairs of images (and their metadata) are
blended and the loss is the same blend of the two labels' losses."""

from __future__ import annotations

import numpy as np
import torch

KINDS = ("mixup", "cutmix")


def mix_batch(
    x: torch.Tensor, meta: torch.Tensor, kind: str, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend each image with another of the batch.

    Returns (images, metadata, partner index, lam): the loss is
    lam * loss(y) + (1 - lam) * loss(y[partner]). Mixup blends whole images; CutMix pastes
    a box of the partner covering 1 - lam of the area (lam is recomputed from the box
    after clipping). Metadata is blended with the same lam in both cases.
    """
    if kind not in KINDS:
        raise ValueError(f"mix={kind!r}: must be one of {KINDS}")
    if alpha <= 0:
        raise ValueError(f"mix_alpha={alpha}: must be above 0")
    lam = float(rng.beta(alpha, alpha))
    partner = torch.from_numpy(rng.permutation(len(x)))
    if kind == "mixup":
        x = x * lam + x[partner] * (1 - lam)
    else:
        h, w = x.shape[-2:]
        cut_h, cut_w = round(h * (1 - lam) ** 0.5), round(w * (1 - lam) ** 0.5)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        x = x.clone()
        x[..., top:bottom, left:right] = x[partner][..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)
    meta = meta * lam + meta[partner] * (1 - lam)
    return x, meta, partner, lam
