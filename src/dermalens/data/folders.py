"""Image folders: one sub-folder per class (DermNet style), optionally under train/ and test/.

    dermalens data check FOLDER        # FOLDER/<class name>/<image>, FOLDER/classes.csv optional

Every class folder loads. A folder named by a taxonomy code or alias takes that code, name
and malignant flag; any other folder becomes an *open* class: code = the name's slug
(`taxonomy.open_code`), display name = the folder name, malignant = None (unknown). A
`classes.csv` beside the class folders (columns folder, code, name, malignant; blank cells
keep the default) declares codes, names and flags; two folders given one code are merged.
A folder one or two letters away from a known name (`Melanomma`) is refused as a likely
typo unless classes.csv lists it.

There are no lesion ids, so near-duplicate images (perceptual and difference hash within a
few bits) are clustered and the cluster stands in for the lesion: copies of one photo never
cross splits. Conflict rule: a cluster whose images sit in two or more class folders (the
same photograph, or a near copy, filed under different classes) is dropped whole, kept under
none of them, because we cannot tell which label is right; each such cluster is listed in
`Dataset.problems` (prefix `records.CONFLICTING_LABELS`) and counted by `data check`.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path

from dermalens.data.dedupe import clusters, file_hash, image_phash, near_pairs
from dermalens.data.records import CONFLICTING_LABELS, UNREADABLE, DataError, Dataset, make_table
from dermalens.imageio import ImageError
from dermalens.taxonomy import (
    ALIASES,
    CLASSES,
    LesionClass,
    _slug,
    known_code,
    lookup,
    open_code,
    register_class,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PARTS = ("train", "test")  # merged; the part is kept in `source` as "folders:<part>"
CLASSES_CSV = "classes.csv"
CSV_COLUMNS = ("folder", "code", "name", "malignant")
MALIGNANT_VALUES = {"yes": True, "true": True, "1": True, "malignant": True}
MALIGNANT_VALUES |= {"no": False, "false": False, "0": False, "benign": False}
MALIGNANT_VALUES |= {"": None, "unknown": None}
TYPO_EDITS = 2  # a folder this many letters (inserted or deleted) from a known name is a typo


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


def _edits(a: str, b: str) -> int:
    """Letters inserted or deleted to turn `a` into `b` (a substitution counts two)."""
    same = sum(block.size for block in difflib.SequenceMatcher(None, a, b).get_matching_blocks())
    return len(a) + len(b) - 2 * same


def _typo_of(slug: str) -> list[str]:
    names = [*ALIASES, *CLASSES]
    close = difflib.get_close_matches(slug, names, n=3)
    typo = len(slug) >= 5 and any(_edits(slug, c) <= TYPO_EDITS for c in close)
    return close if typo else []


def folder_class(folder: Path, declared: dict[str, LesionClass] | None = None) -> LesionClass:
    """The class a folder holds: declared in classes.csv, else known, else an open class."""
    if declared and folder.name in declared:
        return declared[folder.name]
    code = known_code(folder.name)
    if code is not None:
        return CLASSES[code]
    slug = _slug(folder.name)
    close = _typo_of(slug)
    if close:
        raise DataError(
            f"{folder}: class folder {folder.name!r} is not a known class: add an alias for "
            f"{slug!r} to dermalens.taxonomy.ALIASES; close matches: {close}; or, if it is "
            f"another class, list it in {CLASSES_CSV} (columns {', '.join(CSV_COLUMNS)})"
        )
    return LesionClass(open_code(folder.name), folder.name, None)


def folder_label(folder: Path, declared: dict[str, LesionClass] | None = None) -> str:
    return folder_class(folder, declared).code


def _row_class(where: str, row: dict[str, str]) -> LesionClass:
    """One classes.csv row as a class; a taxonomy code keeps the taxonomy's name and flag."""
    text = (row.get("malignant") or "").strip().lower()
    if text not in MALIGNANT_VALUES:
        raise DataError(
            f"{where}, column malignant: {row['malignant']!r} is not one of yes/no/true/false/"
            "1/0/malignant/benign/unknown or blank (unknown)"
        )
    folder, malignant = row["folder"].strip(), MALIGNANT_VALUES[text]
    given = (row.get("code") or "").strip()
    code = _slug(given) if given else (known_code(folder) or open_code(folder))
    if given and code != given:
        raise DataError(f"{where}, column code: {given!r} is not a code; write {code!r}")
    name = (row.get("name") or "").strip()
    known = CLASSES.get(code)
    if known and ((name and name != known.name) or (text and malignant != known.malignant)):
        raise DataError(
            f"{where}: code {code!r} is the taxonomy's {known.name!r} (malignant "
            f"{known.malignant}): leave name and malignant blank, or choose another code"
        )
    return known or LesionClass(code, name or folder, malignant)


def read_classes_csv(path: Path, folder_names: set[str]) -> dict[str, LesionClass]:
    """Folder name -> declared class, from a classes.csv; DataError naming row and column."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column {missing[0]!r}: the header must be "
                f"{','.join(CSV_COLUMNS)} (found {','.join(reader.fieldnames or [])})"
            )
        rows = list(reader)
    declared: dict[str, LesionClass] = {}
    first: dict[str, tuple[int, LesionClass]] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where, folder = f"{path}: row {number}", (row["folder"] or "").strip()
        if folder not in folder_names:
            close = difflib.get_close_matches(folder, sorted(folder_names), n=3)
            hint = f"; close matches: {close}" if close else ""
            raise DataError(f"{where}, column folder: no class folder named {folder!r}{hint}")
        if folder in declared:
            raise DataError(f"{where}, column folder: {folder!r} is listed twice")
        found = _row_class(where, row)
        seen, other = first.setdefault(found.code, (number, found))
        if other != found:
            raise DataError(
                f"{where}, column code: duplicate code {found.code!r} (row {seen}) with another "
                f"name or malignant flag ({other.name!r}, {other.malignant}); one code is one "
                "class: give both rows the same name and flag to merge the folders"
            )
        declared[folder] = found
    return declared


def _register(classes: list[LesionClass]) -> None:
    for found in classes:
        if found.code not in CLASSES and lookup(found.code) != found:
            register_class(found.code, found.name, found.malignant)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _drop_conflicts(rows: list[dict], shas: list[str]) -> tuple[list[dict], list[str]]:
    """Apply the conflict rule (module docstring): drop whole clusters with 2+ labels."""
    labels: dict[str, set[str]] = {}
    for row in rows:
        labels.setdefault(row["lesion_id"], set()).add(row["label"])
    bad = {cid for cid, found in labels.items() if len(found) > 1}
    problems = []
    for cid in sorted(bad, key=lambda c: int(c.split("-")[1])):
        members = [(r["image_id"], sha) for r, sha in zip(rows, shas) if r["lesion_id"] == cid]
        kind = "exact copies" if len({sha for _, sha in members}) == 1 else "near copies"
        problems.append(f"{CONFLICTING_LABELS}{kind}: {json.dumps([i for i, _ in members])}")
    return [r for r in rows if r["lesion_id"] not in bad], problems


def load_folders(root: str | Path, near_threshold: int = 4) -> Dataset:
    """Load a class-per-folder set; lesion_id is a near-duplicate cluster ("cluster-<n>").

    Open classes are registered in the taxonomy (`register_class`); photos filed under two
    or more class folders are dropped (the conflict rule in the module docstring)."""
    root = Path(root)
    folders, problems = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class sub-folders found")
    declared = {}
    if (root / CLASSES_CSV).is_file():
        declared = read_classes_csv(root / CLASSES_CSV, {f.name for _, f in folders})
    found = {folder: folder_class(folder, declared) for _, folder in folders}
    _register(list(found.values()))
    rows, hashes, shas = [], [], []
    for source, folder in folders:
        files = _files(folder)
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
            shas.append(file_hash(str(path)))
            rows.append({"image_id": name, "path": str(path), "label": found[folder].code})
            rows[-1].update(source=source, patient_id=None, age=None, sex=None, site=None)
    if not rows:
        raise DataError(f"{root}: no readable images in {len(folders)} class folder(s)")
    for row, cluster in zip(rows, clusters(len(rows), near_pairs(hashes, near_threshold))):
        row["lesion_id"] = f"cluster-{cluster}"
    rows, conflicts = _drop_conflicts(rows, shas)
    left = {row["label"] for row in rows}
    conflicts += [
        f"class folder emptied by the conflict rule (all its photos are in other folders too): "
        f"{folder.relative_to(root).as_posix()}"
        for folder, found_class in found.items()
        if found_class.code not in left and _files(folder)
    ]
    if not rows:
        raise DataError(f"{root}: every image is filed under two or more class folders")
    return Dataset(make_table(rows), root, "folders", problems + conflicts)
