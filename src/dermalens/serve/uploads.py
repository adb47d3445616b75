"""Uploaded images: size limits, safe decoding, and (with consent only) anonymous storage.

Every limit is checked before decoding, and every failure becomes an HTTP error whose
message names the problem and the limit.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import struct
from pathlib import Path

import numpy as np
from fastapi import HTTPException, UploadFile, status
from PIL import Image, UnidentifiedImageError

from dermalens.imageio import ImageError, load_image
from dermalens.serve.i18n import N_, _, number

# Formats Pillow decodes by itself (no Ghostscript and friends). "JPEG" includes MPO, the
# multi-picture JPEG that many phone cameras write.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED = N_("JPEG, PNG, WebP, BMP, TIFF or GIF")


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes; 413 past `limit`, 400 when empty."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            _("file is over the upload limit of %(limit)s bytes (MAX_UPLOAD_BYTES)")
            % {"limit": number(limit)},
        )
    if not data:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, _("empty file (0 bytes)"))
    return data


# imageio's sentence for too many pixels (the shared layer speaks English only)
TOO_MANY_PIXELS = re.compile(r"image is (\d+)x(\d+) = [\d,]+ pixels, over the limit of ([\d,]+)")


# imageio's other sentences (`_problem`), worded for the request's language
SENTENCES = [
    (re.compile(r"image has no pixels$"), N_("image has no pixels")),
    (
        re.compile(r"truncated or corrupt image \((?P<error>.*)\)$"),
        N_("truncated or corrupt image (%(error)s)"),
    ),
    (
        re.compile(r"too many pixels to decode safely \((?P<error>.*)\)$"),
        N_("too many pixels to decode safely (%(error)s)"),
    ),
]


def image_error(exc: ImageError) -> HTTPException:
    """Map a decoding failure to its status: 413 for too many pixels, 400 otherwise."""
    message = re.sub(r"^<\w+>: ", "", str(exc))  # drop the "<PngImageFile>: " source name
    if match := TOO_MANY_PIXELS.search(message):
        width, height, limit = (int(g.replace(",", "")) for g in match.groups())
        detail = _(
            "image is %(width)sx%(height)s = %(pixels)s pixels, over the limit of "
            "%(limit)s pixels (MAX_PIXELS)"
        ) % {
            "width": width,
            "height": height,
            "pixels": number(width * height),
            "limit": number(limit),
        }
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)
    for pattern, template in SENTENCES:
        if match := pattern.search(message):
            return HTTPException(status.HTTP_400_BAD_REQUEST, _(template) % match.groupdict())
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


def decode(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """Upright 8-bit RGB; 415 for non-images, 413 over `max_pixels`, 400 when corrupt."""
    try:
        opened = Image.open(io.BytesIO(data), formats=FORMATS)
        return load_image(opened, max_pixels=max_pixels, draft_size=draft_size)
    except UnidentifiedImageError:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            _("not an image (unrecognised format); send a %(formats)s file")
            % {"formats": _(ACCEPTED)},
        ) from None
    except ImageError as exc:
        raise image_error(exc) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # A header cut short or malformed metadata: Pillow fails before or after `load`.
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            _("truncated or corrupt image (%(error)s)") % {"error": exc},
        ) from None


def keep(data: bytes, folder: Path, max_pixels: int) -> str:
    """Save a consented upload at full size under a random name, without EXIF; return the name.

    Re-encoding from bare pixels drops every metadata block (EXIF with GPS, XMP, comments),
    and `folder` is never one the app serves.
    """
    image = decode(data, max_pixels, None)
    bare = Image.fromarray(np.asarray(image))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{secrets.token_hex(16)}.jpg"
    fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        bare.save(fh, format="JPEG", quality=95)
    return name


KEPT_NAME = re.compile(r"[0-9a-f]{32}\.jpg")  # what `keep` writes; nothing else is touched


def kept_path(folder: Path, name: str | None) -> Path | None:
    """The kept image's path, or None when there is none (or the name is not one of ours)."""
    if not name or not KEPT_NAME.fullmatch(name) or not (folder / name).is_file():
        return None
    return folder / name


def remove(folder: Path, names: list[str]) -> None:
    """Delete kept images (after the database rows that named them are gone)."""
    for name in names:
        if KEPT_NAME.fullmatch(name):
            (folder / name).unlink(missing_ok=True)
