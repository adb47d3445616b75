"""The one deterministic preprocessing path, built from the model bundle's description.

Training-time validation, `evaluate`, `predict`, the ONNX check and the web service all
call `to_input`; training adds random augmentation *before* it, never instead of it.
NumPy and Pillow only, so serving needs no PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from dermalens.imageio import ImageSource, load_image

INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
RESIZE_POLICIES = ("cover_crop", "stretch")
COLOR_CONSTANCY = ("none", "shades_of_gray")
SHADES_OF_GRAY_POWER = 6  # Minkowski norm of the illuminant estimate (Finlayson & Trezzi 2004)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become a model input; stored in every bundle and ONNX export."""

    height: int = 150
    width: int = 200
    resize: str = "cover_crop"  # scale to cover HxW keeping aspect, then centre-crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)  # in 0..255 pixel units
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    color_constancy: str = "none"  # none | shades_of_gray (each image's illuminant divided out)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy {self.resize!r} not in {RESIZE_POLICIES}")
        if self.color_constancy not in COLOR_CONSTANCY:
            raise ValueError(
                f"color_constancy {self.color_constancy!r} not in {list(COLOR_CONSTANCY)}"
            )
        if self.interpolation not in INTERPOLATION:
            raise ValueError(f"interpolation {self.interpolation!r} not in {list(INTERPOLATION)}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"input size {self.height}x{self.width} is too small")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(x) for x in known[key])
        return cls(**known)


def resize(image: Image.Image, pre: Preprocessing) -> Image.Image:
    """Resize a PIL RGB image to the model's (width, height) by the bundle's policy."""
    target = (pre.width, pre.height)
    if image.size == target:
        return image
    method = INTERPOLATION[pre.interpolation]
    if pre.resize == "stretch":
        return image.resize(target, method)
    scale = max(pre.width / image.width, pre.height / image.height)
    size = (
        max(pre.width, round(image.width * scale)),
        max(pre.height, round(image.height * scale)),
    )
    image = image.resize(size, method)
    left, top = (size[0] - pre.width) // 2, (size[1] - pre.height) // 2
    return image.crop((left, top, left + pre.width, top + pre.height))


def shades_of_gray(pixels: np.ndarray, power: int = SHADES_OF_GRAY_POWER) -> np.ndarray:
    """CHW RGB pixels (0-255) -> float32 CHW with the scene illuminant made grey.

    Shades of Gray colour constancy: the illuminant of each channel is estimated as the
    `power`-mean of its pixels, and each channel is scaled so the three estimates meet at
    their mean (brightness kept, colour cast removed); values are clipped to 0-255.
    """
    x = np.asarray(pixels, np.float32)
    unit = x.reshape(len(x), -1) / 255.0
    illuminant = np.mean(unit**power, axis=1) ** (1.0 / power)
    gain = illuminant.mean() / np.maximum(illuminant, 1e-6)
    out = x * gain.astype(np.float32)[:, None, None]
    return np.minimum(out, 255.0, out=out)


def channel_planes(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """RGB PIL image -> CHW pixels in 0-255 units (a uint8 view unless colour constancy
    is on, then float32), the input of the (x - mean) / std step."""
    pixels = np.asarray(image).transpose(2, 0, 1)  # uint8 CHW view, no copy
    if pre.color_constancy == "shades_of_gray":
        return shades_of_gray(pixels)
    return pixels


def normalise(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """RGB PIL image of the model's size -> float32 CHW array, (x - mean) / std.

    The arithmetic runs on contiguous channel planes: broadcasting over a last axis of
    length 3 (HWC) is about ten times slower for the same float32 result.
    """
    pixels = channel_planes(image, pre)
    out = np.empty(pixels.shape, np.float32)
    np.subtract(pixels, np.asarray(pre.mean, np.float32)[:, None, None], out=out)
    np.divide(out, np.asarray(pre.std, np.float32)[:, None, None], out=out)
    return out


def to_input(source: ImageSource, pre: Preprocessing) -> np.ndarray:
    """Decode (if needed), resize and normalise one image: float32 array of shape (3, H, W)."""
    image = load_image(source, draft_size=(pre.width, pre.height))
    return normalise(resize(image, pre), pre)
