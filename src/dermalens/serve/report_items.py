"""What a FHIR report or a PDF report is made of: stored predictions and their kept images.

Both exports read the stored response (`PredictionRecord.result`) and, when the upload was
kept with consent, the image file in the uploads folder. Nothing here writes.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dermalens.serve.schemas import PredictionOut
from dermalens.serve.tables import PredictionRecord


@dataclass(frozen=True)
class StoredImage:
    """A kept upload, described without its pixels (FHIR references it, never inlines it)."""

    path: Path
    size: int
    sha1_b64: str  # FHIR Attachment.hash: base64 of the SHA-1 of the bytes
    width: int
    height: int


@dataclass(frozen=True)
class ReportItem:
    out: PredictionOut
    image: StoredImage | None  # None when the image was not kept (no consent) or is gone
    label: str | None = None  # a lesion's label, for visit reports
    image_url: str | None = None  # where staff can fetch the kept image, when a route serves it


@dataclass(frozen=True)
class PatientRef:
    """A pseudonymous patient: the clinic's identifier system and value, no name."""

    system: str
    value: str


def stored_image(uploads_dir: Path, name: str | None) -> StoredImage | None:
    """The kept image's description, or None when there is none or the file is unreadable."""
    if not name:
        return None
    path = uploads_dir / name
    try:
        data = path.read_bytes()
        with Image.open(path) as image:
            width, height = image.size
    except OSError:
        return None
    digest = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
    return StoredImage(path, len(data), digest, width, height)


def item(
    record: PredictionRecord,
    uploads_dir: Path,
    label: str | None = None,
    image_url: str | None = None,
) -> ReportItem:
    """One stored prediction, ready for `fhir_export` and `visit_report`."""
    out = PredictionOut.model_validate(record.result)
    image = stored_image(uploads_dir, record.image_file)
    return ReportItem(out, image, label, image_url if image else None)
