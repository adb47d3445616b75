"""HAM10000: `metadata.csv` or `HAM10000_metadata.csv` plus images in `images/` or parts 1-2."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermalens.data.records import (
    IMAGE_WITHOUT_LABEL,
    LABEL_WITHOUT_IMAGE,
    DataError,
    Dataset,
    make_table,
    normalise_age,
    normalise_sex,
    normalise_site,
)
from dermalens.taxonomy import canonical

CSV_NAMES = ("metadata.csv", "HAM10000_metadata.csv")
IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", ".")
REQUIRED = ("lesion_id", "image_id", "dx")


def find_csv(root: Path) -> Path | None:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def index_images(root: Path, dirs: tuple[str, ...]) -> dict[str, Path]:
    """Map image stem -> path over the given sub-folders (jpg/jpeg/png)."""
    found: dict[str, Path] = {}
    for name in dirs:
        folder = root / name
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.is_file():
                found.setdefault(path.stem, path)
    return found


def load_ham10000(root: str | Path) -> Dataset:
    root = Path(root)
    csv = find_csv(root)
    if csv is None:
        raise DataError(f"{root}: no {' or '.join(CSV_NAMES)} found")
    frame = read_csv(csv, REQUIRED)
    dupes = frame["image_id"][frame["image_id"].duplicated()].unique()
    if len(dupes):
        raise DataError(f"{csv}: duplicate image_id(s) {list(dupes[:5])}")
    images = index_images(root, IMAGE_DIRS)
    rows, problems = [], []
    for rec in frame.to_dict("records"):
        image_id = str(rec["image_id"]).strip()
        try:
            label = canonical(str(rec["dx"]))
        except ValueError as exc:
            raise DataError(f"{csv}: image {image_id}: {exc}") from exc
        path = images.get(image_id)
        if path is None:
            problems.append(f"{LABEL_WITHOUT_IMAGE}{image_id}")
            continue
        rows.append(
            {
                "image_id": image_id,
                "path": str(path),
                "label": label,
                "lesion_id": rec.get("lesion_id") or None,
                "patient_id": None,
                "age": normalise_age(rec.get("age")),
                "sex": normalise_sex(rec.get("sex")),
                "site": normalise_site(rec.get("localization")),
                "source": "ham10000",
            }
        )
    known = set(frame["image_id"].astype(str))
    problems += [f"{IMAGE_WITHOUT_LABEL}{p.name}" for s, p in images.items() if s not in known]
    return Dataset(make_table(rows), root, "ham10000", problems)
