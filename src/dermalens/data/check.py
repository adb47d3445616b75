"""Data checks: unreadable or truncated images and exact duplicates (content hash)."""

from __future__ import annotations

import hashlib

import pandas as pd

from dermalens.imageio import ImageError, load_image


def file_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def unreadable(paths: pd.Series, ids: pd.Series) -> dict[str, str]:
    """image_id -> reason, for every image that does not decode fully."""
    bad = {}
    for image_id, path in zip(ids, paths):
        try:
            load_image(path)
        except ImageError as exc:
            bad[image_id] = str(exc)
    return bad


def exact_duplicates(table: pd.DataFrame) -> list[list[str]]:
    """Groups of image_ids whose files are byte-identical."""
    hashes = table["path"].map(file_hash)
    groups = table.groupby(hashes)["image_id"].apply(list)
    return [g for g in groups if len(g) > 1]


def quick_problems(table: pd.DataFrame) -> set[str]:
    """image_ids to exclude from training: unreadable ones and all but one of each duplicate set."""
    bad = set(unreadable(table["path"], table["image_id"]))
    for group in exact_duplicates(table[~table["image_id"].isin(bad)]):
        bad.update(sorted(group)[1:])
    return bad
