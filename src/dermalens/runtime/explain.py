"""Heatmaps. The head is global-average-pool -> linear, so Grad-CAM on the last feature map
reduces exactly to CAM: d logit_c / d F_k(i,j) = W[c,k] / (h*w), a constant per channel,
hence Grad-CAM = ReLU(sum_k W[c,k] F_k) up to a positive scale. NumPy only."""

from __future__ import annotations

import numpy as np
from PIL import Image


def cam(fmap: np.ndarray, weight: np.ndarray, index: int, size: tuple[int, int]) -> np.ndarray:
    """Class-activation map of class `index`, upsampled to (height, width), scaled to [0, 1].

    `fmap` is one image's C x h x w feature map; `weight` is the head's classes x features
    matrix (extra metadata columns after the C image features are ignored: they are
    constant over space).
    """
    channels = fmap.shape[0]
    raw = np.tensordot(weight[index, :channels].astype(np.float32), fmap.astype(np.float32), axes=1)
    raw = np.maximum(raw, 0)
    top = raw.max()
    raw = raw / top if top > 0 else raw
    image = Image.fromarray(raw.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.BILINEAR
    )
    return np.clip(np.asarray(image), 0, 1)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a [0, 1] heatmap (jet-like colours) over an RGB image of any size."""
    h = (
        np.asarray(
            Image.fromarray((heatmap * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR),
            dtype=np.float32,
        )
        / 255.0
    )
    colour = np.stack(
        [
            np.clip(1.5 - abs(4 * h - 3), 0, 1),
            np.clip(1.5 - abs(4 * h - 2), 0, 1),
            np.clip(1.5 - abs(4 * h - 1), 0, 1),
        ],
        axis=-1,
    )
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mix = (1 - alpha * h[..., None]) * base + alpha * h[..., None] * colour
    return Image.fromarray((mix * 255).round().astype(np.uint8))
