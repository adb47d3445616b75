"""Image folders: one sub-folder per class (DermNet style), optionally under train/ and test/.

There are no lesion ids, so near-duplicate images (perceptual hash within a few bits) are
clustered and the cluster stands in for the lesion: copies of one photo never cross splits.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from dermalens.data.dedupe import clusters, image_phash, near_pairs
from dermalens.data.records import UNREADABLE, DataError, Dataset, make_table
from dermalens.imageio import ImageError
from dermalens.taxonomy import ALIASES, CLASSES, _slug, canonical

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PARTS = ("train", "test")  # merged; the part is kept in `source` as "folders:<part>"


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folders(root: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(source, class folder) pairs, and problems (folders ignored next to train/ and test/)."""
    parts = [p for p in PARTS if (root / p).is_dir()]
    if not parts:
        return [("folders", d) for d in _subfolders(root)], []
    ignored = [d.name for d in _subfolders(root) if d.name not in parts]
    problems = [f"ignored folder next to {'/'.join(parts)}: {name}" for name in ignored]
    return [(f"folders:{p}", d) for p in parts for d in _subfolders(root / p)], problems


def folder_label(folder: Path) -> str:
    try:
        return canonical(folder.name)
    except ValueError as exc:
        close = difflib.get_close_matches(_slug(folder.name), [*ALIASES, *CLASSES], n=3)
        hint = f"; close matches: {close}" if close else ""
        raise DataError(
            f"{folder}: class folder {folder.name!r} is not a known class: add an alias for "
            f"{_slug(folder.name)!r} to dermalens.taxonomy.ALIASES{hint}"
        ) from exc


def load_folders(root: str | Path, near_threshold: int = 4) -> Dataset:
    """Load a class-per-folder set; lesion_id is a near-duplicate cluster ("cluster-<n>")."""
    root = Path(root)
    folders, problems = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class sub-folders found")
    rows, hashes = [], []
    for source, folder in folders:
        label = folder_label(folder)
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            problems.append(f"empty class folder: {folder.relative_to(root).as_posix()}")
        for path in files:
            name = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(f"not an image file: {name}")
                continue
            try:
                hashes.append(image_phash(path))
            except ImageError as exc:
                problems.append(f"{UNREADABLE}{name}: {exc}")
                continue
            rows.append({"image_id": name, "path": str(path), "label": label, "source": source})
            rows[-1].update(patient_id=None, age=None, sex=None, site=None)
    if not rows:
        raise DataError(f"{root}: no readable images in {len(folders)} class folder(s)")
    for row, cluster in zip(rows, clusters(len(rows), near_pairs(hashes, near_threshold))):
        row["lesion_id"] = f"cluster-{cluster}"
    table = make_table(rows)
    labels = table.groupby("lesion_id")["label"].unique()
    problems += [
        f"near-duplicate cluster with several labels: {cid} {sorted(v)}"
        for cid, v in labels.items()
        if len(v) > 1
    ]
    return Dataset(table, root, "folders", problems)
