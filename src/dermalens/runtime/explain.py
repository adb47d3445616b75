"""Heatmaps. The head is global-average-pool -> linear, so Grad-CAM on the last feature map
reduces exactly to CAM: d logit_c / d F_k(i,j) = W[c,k] / (h*w), a constant per channel,
hence Grad-CAM = ReLU(sum_k W[c,k] F_k) up to a positive scale. NumPy only.

`cam_grid` is the map at feature-map resolution (e.g. 5 x 7 for a 150 x 200 input); `cam`
upsamples it bilinearly (half-pixel centres, edges clamped: PIL's and the page's rule) and
`overlay` blends it over an image. `colour_map` is the one colour scale both the PNG overlay
and the page's canvas (static/app.js, `heatColour`) use.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ALPHA = 0.45  # the overlay's opacity at heat 1 (the page's canvas uses the same)


def cam_grid(fmap: np.ndarray, weight: np.ndarray, index: int) -> np.ndarray:
    """Class-activation map of class `index` at feature-map resolution (h x w), in [0, 1].

    `fmap` is one image's C x h x w feature map; `weight` is the head's classes x features
    matrix (extra metadata columns after the C image features are ignored: they are
    constant over space).
    """
    channels = fmap.shape[0]
    raw = np.tensordot(weight[index, :channels].astype(np.float32), fmap.astype(np.float32), axes=1)
    raw = np.maximum(raw, 0)
    top = raw.max()
    return (raw / top if top > 0 else raw).astype(np.float32)


def upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A [0, 1] grid resized bilinearly to (height, width)."""
    image = Image.fromarray(grid.astype(np.float32), mode="F").resize(
        (size[1], size[0]), Image.BILINEAR
    )
    return np.clip(np.asarray(image), 0, 1)


def cam(fmap: np.ndarray, weight: np.ndarray, index: int, size: tuple[int, int]) -> np.ndarray:
    """Class-activation map of class `index`, upsampled to (height, width), scaled to [0, 1]."""
    return upsample(cam_grid(fmap, weight, index), size)


def colour_map(h: np.ndarray) -> np.ndarray:
    """[0, 1] heat -> jet-like RGB in [0, 1] (blue, cyan, yellow, red), shape (..., 3)."""
    return np.stack(
        [
            np.clip(1.5 - abs(4 * h - 3), 0, 1),
            np.clip(1.5 - abs(4 * h - 2), 0, 1),
            np.clip(1.5 - abs(4 * h - 1), 0, 1),
        ],
        axis=-1,
    )


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """Blend a [0, 1] heatmap (jet-like colours) over an RGB image of any size."""
    h = (
        np.asarray(
            Image.fromarray((heatmap * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR),
            dtype=np.float32,
        )
        / 255.0
    )
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    mix = (1 - alpha * h[..., None]) * base + alpha * h[..., None] * colour_map(h)
    return Image.fromarray((mix * 255).round().astype(np.uint8))
