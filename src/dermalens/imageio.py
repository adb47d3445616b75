"""Safe image decoding: any common mode to RGB, EXIF orientation applied, size limits enforced.

Every path into the model (training, evaluation, prediction, the web service) decodes
through `load_image`, so a truncated JPEG or a decompression bomb fails the same way
everywhere, with a message that names the problem.
"""

from __future__ import annotations

import io
import stat
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


Image.MAX_IMAGE_PIXELS = None  # we check the pixel count ourselves, before decoding


MAX_PIXELS = 40_000_000  # about 40 megapixels; larger inputs are rejected before decoding


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # in folders


ImageSource = str | Path | bytes | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why."""


def _name(source: ImageSource) -> str:
    return str(source) if isinstance(source, str | Path) else f"<{type(source).__name__}>"


# What Pillow and its format plugins raise on a bad file: OSError (truncated reads, broken
# data streams), SyntaxError / ValueError / struct.error / EOFError / IndexError from header
# parsers, zlib.error from compressed chunks, DecompressionBombError when Pillow's own limit
# is set. Each becomes an ImageError with a sentence, so no caller needs to know the list.
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def _problem(exc: BaseException) -> str:
    """The sentence (after the file's name) for an exception raised while reading an image."""
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (unrecognised format)"
    why = str(exc) or type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels to decode safely ({why})"
    return f"truncated or corrupt image ({why})"


def _check_file(path: Path) -> None:
    """A regular, non-empty, readable file, or an ImageError saying which it is not."""
    try:
        info = path.stat()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ImageError(f"{path}: {_problem(exc)}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a folder, not an image")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ImageError(f"{path}: not a regular file")
    if info.st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


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
        _check_file(fp)
    try:
        return Image.open(fp)
    except DECODE_ERRORS as exc:  # a header cut short fails here, before any pixel
        raise ImageError(f"{_name(source)}: {_problem(exc)}") from exc


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
    try:
        return _decode(image, _name(source), max_pixels, draft_size)
    except BaseException:
        if image is not source:  # ours: do not leave the file open
            image.close()
        raise


def _decode(
    image: Image.Image, name: str, max_pixels: int, draft_size: tuple[int, int] | None
) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} pixels"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{name}: image has no pixels")
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", draft_size)
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return to_rgb(image)
    except ImageError:
        raise
    except DECODE_ERRORS as exc:
        raise ImageError(f"{name}: {_problem(exc)}") from exc


def _folder_images(folder: Path) -> list[Path]:
    # is_file: a sub-folder named "scan.jpg" is not an image
    return sorted(
        f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    )


def find_images(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Expand files and folders (recursively, sorted) into `(image file, "")` pairs, in order.

    A path that yields no image is kept as `(path, reason)` instead of stopping the
    expansion, so a batch can report it on its own line and go on with the rest.
    """
    out: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        try:
            out += _expand(p)
        except OSError as exc:  # e.g. a folder we may not read
            out.append((p, f"{p}: {_problem(exc)}"))
    return out


def _expand(path: Path) -> list[tuple[Path, str]]:
    if not path.is_dir():
        return [(path, "" if path.exists() else f"{path}: no such file or folder")]
    found = _folder_images(path)
    if not found:
        return [(path, f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")]
    return [(f, "") for f in found]


def iter_images(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into image files, sorted within each folder.

    Raises FileNotFoundError for a path that does not exist; a folder without images
    adds nothing. (`find_images` reports both instead.)
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += _folder_images(p)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out
