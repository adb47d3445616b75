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

# Formats Pillow decodes by itself (no Ghostscript and friends). "JPEG" includes MPO, the
# multi-picture JPEG that many phone cameras write.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ACCEPTED = "JPEG, PNG, WebP, BMP, TIFF or GIF"


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes; 413 past `limit`, 400 when empty."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"file is over the upload limit of {limit:,} bytes (MAX_UPLOAD_BYTES)",
        )
    if not data:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "empty file (0 bytes)")
    return data


def image_error(exc: ImageError) -> HTTPException:
    """Map a decoding failure to its status: 413 for too many pixels, 400 otherwise."""
    message = re.sub(r"^<\w+>: ", "", str(exc))  # drop the "<PngImageFile>: " source name
    if "over the limit of" in message:
        return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{message} (MAX_PIXELS)")
    return HTTPException(status.HTTP_400_BAD_REQUEST, message)


def decode(data: bytes, max_pixels: int, draft_size: tuple[int, int] | None) -> Image.Image:
    """Upright 8-bit RGB; 415 for non-images, 413 over `max_pixels`, 400 when corrupt."""
    try:
        opened = Image.open(io.BytesIO(data), formats=FORMATS)
        return load_image(opened, max_pixels=max_pixels, draft_size=draft_size)
    except UnidentifiedImageError:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"not an image (unrecognised format); send a {ACCEPTED} file",
        ) from None
    except ImageError as exc:
        raise image_error(exc) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        # A header cut short or malformed metadata: Pillow fails before or after `load`.
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"truncated or corrupt image ({exc})"
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
