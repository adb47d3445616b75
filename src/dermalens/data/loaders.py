"""One entry point for every source format: `load_dataset(path)` detects which one it is."""

from __future__ import annotations

from pathlib import Path

from dermalens.data.folders import load_folders
from dermalens.data.ham10000 import CSV_NAMES, load_ham10000
from dermalens.data.isic2019 import load_isic2019
from dermalens.data.records import DataError, Dataset


def detect_format(root: Path) -> str:
    if any((root / name).is_file() for name in CSV_NAMES):
        return "ham10000"
    if (root / "ISIC_2019_Training_GroundTruth.csv").is_file():
        return "isic2019"
    if any(p.is_dir() for p in root.iterdir()):
        return "folders"
    raise DataError(
        f"{root}: not a dataset: expected {' or '.join(CSV_NAMES)} (HAM10000), "
        f"ISIC_2019_Training_GroundTruth.csv (ISIC 2019) or one sub-folder per class"
    )


def load_dataset(path: str | Path, format: str = "auto") -> Dataset:
    """Load HAM10000, ISIC 2019 or an image-folder set as one canonical table."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    format = detect_format(root) if format == "auto" else format
    if format == "ham10000":
        return load_ham10000(root)
    if format == "isic2019":
        return load_isic2019(root)
    if format == "folders":
        return load_folders(root)
    raise DataError(f"unknown dataset format {format!r}: use ham10000, isic2019 or folders")
