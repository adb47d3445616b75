"""Safe image decoding: any common mode to RGB, EXIF orientation applied, size limits enforced.

Every path into the model (training, evaluation, prediction, the web service) decodes
through `load_image`, so a truncated JPEG or a decompression bomb fails the same way
everywhere, with a message that names the problem.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


Image.MAX_IMAGE_PIXELS = None  # we check the pixel count ourselves, before decoding


MAX_PIXELS = 40_000_000  # about 40 megapixels; larger inputs are rejected before decoding


ImageSource = str | Path | bytes | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why."""


def _name(source: ImageSource) -> str:
    return str(source) if isinstance(source, str | Path) else f"<{type(source).__name__}>"


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty file (0 bytes)")
        fp: io.BytesIO | Path = io.BytesIO(source)
    else:
        fp = Path(source)
        if not fp.is_file():
            raise ImageError(f"{fp}: no such file")
        if fp.stat().st_size == 0:
            raise ImageError(f"{fp}: empty file (0 bytes)")
    try:
        return Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageError(f"{_name(source)}: not an image (unrecognised format)") from exc


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
                array = array * 255.0
            array = np.clip(array, 0, 255).astype(np.uint8)
        return Image.fromarray(
            array.squeeze() if array.ndim == 3 and array.shape[2] == 1 else array
        )
    raise ImageError(f"array of shape {array.shape} is not an HxW, HxWx3 or HxWx4 image")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert grayscale, 16-bit, palette, RGBA, CMYK ... to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray((array / top * 255).round().astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def load_image(
    source: ImageSource,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode `source` (path, bytes, PIL image or array) to an upright 8-bit RGB image.

    `draft_size` (width, height) lets the JPEG decoder downscale by 2/4/8 while decoding
    when the source is much larger than needed; the result is never smaller than that.
    """
    image = _open(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{_name(source)}: image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{_name(source)}: image has no pixels")
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError) as exc:
        raise ImageError(f"{_name(source)}: truncated or corrupt image ({exc})") from exc
    return to_rgb(image)


def iter_images(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into image files, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out
