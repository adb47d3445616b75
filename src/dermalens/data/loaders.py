"""One entry point for every source format: `load_dataset(path)` detects which one it is.

HAM10000 and PAD-UFES-20 both ship a `metadata.csv`: its columns tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dermalens.data import ham10000, pad_ufes
from dermalens.data.folders import load_folders
from dermalens.data.ham10000 import CSV_NAMES, find_csv, load_ham10000
from dermalens.data.isic2019 import load_isic2019
from dermalens.data.pad_ufes import load_pad_ufes
from dermalens.data.records import DataError, Dataset

FORMATS = ("ham10000", "pad_ufes20", "isic2019", "folders")
# The columns each metadata-CSV format needs; the first one a CSV satisfies wins.
CSV_COLUMNS = {"ham10000": ham10000.REQUIRED, "pad_ufes20": pad_ufes.REQUIRED}
CSV_TITLES = {"ham10000": "HAM10000", "pad_ufes20": "PAD-UFES-20"}


def csv_format(csv: Path) -> str:
    """The format whose required columns `csv` has; DataError naming each one's missing."""
    try:
        columns = list(pd.read_csv(csv, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV ({exc})") from exc
    # PAD-UFES-20 names its CSV metadata.csv; HAM10000_metadata.csv is HAM10000's alone.
    names = CSV_COLUMNS if csv.name == pad_ufes.CSV_NAME else ("ham10000",)
    missing = {name: [c for c in CSV_COLUMNS[name] if c not in columns] for name in names}
    for name, lacking in missing.items():
        if not lacking:
            return name
    wanted = " nor ".join(
        f"{CSV_TITLES[name]} (missing column(s) {lacking})" for name, lacking in missing.items()
    )
    raise DataError(f"{csv}: neither {wanted}; found {columns}")


def detect_format(root: Path) -> str:
    csv = find_csv(root)
    if csv is not None:
        return csv_format(csv)
    if (root / "ISIC_2019_Training_GroundTruth.csv").is_file():
        return "isic2019"
    if any(p.is_dir() for p in root.iterdir()):
        return "folders"
    raise DataError(
        f"{root}: not a dataset: expected {' or '.join(CSV_NAMES)} (HAM10000 or "
        f"PAD-UFES-20), ISIC_2019_Training_GroundTruth.csv (ISIC 2019) or one sub-folder "
        "per class"
    )


def load_dataset(path: str | Path, format: str = "auto") -> Dataset:
    """Load HAM10000, PAD-UFES-20, ISIC 2019 or an image-folder set as one canonical table."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    format = detect_format(root) if format == "auto" else format
    if format == "ham10000":
        return load_ham10000(root)
    if format == "pad_ufes20":
        return load_pad_ufes(root)
    if format == "isic2019":
        return load_isic2019(root)
    if format == "folders":
        return load_folders(root)
    raise DataError(f"unknown dataset format {format!r}: use {', '.join(FORMATS)}")
