"""Data checks: unreadable images, exact and near duplicates, labels and images that do not pair,
tiny classes, and photos filed under two or more class folders (which the folder loader drops).

    dermalens data check DATA [--json]

`quick_problems` is what training drops; `check_dataset` is the full report for a person.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from dermalens.data.dedupe import clusters, duplicate_extras, file_hash, image_phash, near_pairs
from dermalens.data.loaders import load_dataset
from dermalens.data.records import (
    CONFLICTING_LABELS,
    IMAGE_WITHOUT_LABEL,
    LABEL_WITHOUT_IMAGE,
    UNREADABLE,
    DataError,
    Dataset,
    group_ids,
)
from dermalens.imageio import ImageError, load_image

SHOW = 10  # groups / items listed per section in the text report
TINY = 10  # a class with fewer images than this is reported as tiny
CONFLICT_RULE = "dropped: kept under none of their folders"


def unreadable(paths: pd.Series, ids: pd.Series) -> dict[str, str]:
    """image_id -> reason, for every image that does not decode fully."""
    bad = {}
    for image_id, path in zip(ids, paths):
        try:
            load_image(path)
        except ImageError as exc:
            bad[image_id] = str(exc)
    return bad


def quick_problems(table: pd.DataFrame) -> set[str]:
    """image_ids to exclude from training: unreadable ones and all but one of each duplicate set."""
    bad = set(unreadable(table["path"], table["image_id"]))
    return bad | duplicate_extras(table[~table["image_id"].isin(bad)])


@dataclass
class CheckReport:
    """What `check_dataset` found. `ok` is False only when an image cannot be decoded."""

    root: str
    source: str
    images: int
    counts: dict[str, int]
    unreadable: dict[str, str] = field(default_factory=dict)
    exact_duplicates: list[list[str]] = field(default_factory=list)
    exact_cross_lesion: int = 0
    near_duplicates: list[list[str]] = field(default_factory=list)
    near_threshold: int = 4
    near_cross_lesion: int = 0
    labels_without_images: list[str] = field(default_factory=list)
    images_without_labels: list[str] = field(default_factory=list)
    other_problems: list[str] = field(default_factory=list)
    tiny_classes: dict[str, int] = field(default_factory=dict)
    conflicting_exact: list[list[str]] = field(default_factory=list)
    conflicting_near: list[list[str]] = field(default_factory=list)
    conflict_rule: str = CONFLICT_RULE

    @property
    def ok(self) -> bool:
        return not self.unreadable

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        lines = [f"{self.root} ({self.source}): {self.images} images, {len(self.counts)} classes"]
        width = max((len(k) for k in self.counts), default=0)
        lines += [f"  {k:<{width}}  {v:>6}" for k, v in self.counts.items()]
        lines.append(f"Unreadable or truncated images: {len(self.unreadable)}")
        lines += _listed([f"{k}: {v}" for k, v in self.unreadable.items()])
        lines.append(f"Tiny classes (fewer than {TINY} images): {len(self.tiny_classes)}")
        lines += _listed([f"{k}: {v}" for k, v in self.tiny_classes.items()])
        lines += self._conflict_lines()
        lines.append(
            f"Exact duplicates: {len(self.exact_duplicates)} groups, "
            f"{self.exact_cross_lesion} spanning more than one lesion"
        )
        lines += _listed([_ids(g) for g in self.exact_duplicates])
        lines.append(
            f"Near duplicates (phash and dhash distance <= {self.near_threshold}): "
            f"{len(self.near_duplicates)} groups, {self.near_cross_lesion} spanning more "
            "than one lesion"
        )
        lines += _listed([_ids(g) for g in self.near_duplicates])
        lines.append(f"Labels without images: {len(self.labels_without_images)}")
        lines += _listed(self.labels_without_images)
        lines.append(f"Images without labels: {len(self.images_without_labels)}")
        lines += _listed(self.images_without_labels)
        if self.other_problems:
            lines.append(f"Other problems: {len(self.other_problems)}")
            lines += _listed(self.other_problems)
        lines.append("OK" if self.ok else "NOT OK: some images cannot be decoded")
        return "\n".join(lines)

    def _conflict_lines(self) -> list[str]:
        groups = self.conflicting_exact + self.conflicting_near
        lines = [
            f"Conflicting labels: {len(groups)} photos in 2+ class folders "
            f"({len(self.conflicting_exact)} as exact copies, {len(self.conflicting_near)} as "
            f"near copies across folders), {sum(map(len, groups))} images, {self.conflict_rule}"
        ]
        return lines + _listed([_ids(g) for g in groups])


def _listed(items: list[str]) -> list[str]:
    more = [f"  ... and {len(items) - SHOW} more"] if len(items) > SHOW else []
    return [f"  {item}" for item in items[:SHOW]] + more


def _ids(group: list[str], show: int = 6) -> str:
    more = f" (+{len(group) - show} more)" if len(group) > show else ""
    return ", ".join(group[:show]) + more


def _split_problems(problems: list[str], report: CheckReport) -> None:
    for problem in problems:
        if problem.startswith(LABEL_WITHOUT_IMAGE):
            report.labels_without_images.append(problem.removeprefix(LABEL_WITHOUT_IMAGE))
        elif problem.startswith(IMAGE_WITHOUT_LABEL):
            report.images_without_labels.append(problem.removeprefix(IMAGE_WITHOUT_LABEL))
        elif problem.startswith(CONFLICTING_LABELS):
            kind, _, ids = problem.removeprefix(CONFLICTING_LABELS).partition(": ")
            exact = kind == "exact copies"
            (report.conflicting_exact if exact else report.conflicting_near).append(json.loads(ids))
        elif problem.startswith(UNREADABLE):
            name, _, reason = problem.removeprefix(UNREADABLE).partition(": ")
            report.unreadable[name] = reason
        else:
            report.other_problems.append(problem)


def _groups(ids: list[str], members: list[int]) -> list[list[str]]:
    """Groups (of more than one) of `ids` that share a member number."""
    by_member: dict[int, list[str]] = {}
    for image_id, member in zip(ids, members):
        by_member.setdefault(member, []).append(image_id)
    return [sorted(g) for g in by_member.values() if len(g) > 1]


def _cross_lesion(groups: list[list[str]], lesion: dict[str, str]) -> int:
    return sum(len({lesion[i] for i in g}) > 1 for g in groups)


def check_dataset(path: str | Path | Dataset, near_threshold: int = 4) -> CheckReport:
    """Load a dataset folder (or take a loaded Dataset) and check every image in it."""
    dataset = path if isinstance(path, Dataset) else load_dataset(path)
    table = dataset.table
    report = CheckReport(str(dataset.root), dataset.source, len(table), dataset.counts())
    report.near_threshold = near_threshold
    report.tiny_classes = {k: v for k, v in report.counts.items() if v < TINY}
    _split_problems(dataset.problems, report)
    ids, sha, phash = [], [], []
    for image_id, file in zip(table["image_id"], table["path"]):
        try:
            digest, perceptual = file_hash(file), image_phash(file)
        except (ImageError, OSError) as exc:
            report.unreadable[image_id] = str(exc)
            continue
        ids.append(image_id)
        sha.append(digest)
        phash.append(perceptual)
    lesion = dict(zip(table["image_id"], group_ids(table)))
    numbers = {digest: n for n, digest in enumerate(dict.fromkeys(sha))}
    report.exact_duplicates = _groups(ids, [numbers[d] for d in sha])
    report.exact_cross_lesion = _cross_lesion(report.exact_duplicates, lesion)
    # Near groups made only of byte-identical files are already listed as exact duplicates.
    content = dict(zip(ids, sha))
    near = _groups(ids, clusters(len(ids), near_pairs(phash, near_threshold)))
    report.near_duplicates = [g for g in near if len({content[i] for i in g}) > 1]
    report.near_cross_lesion = _cross_lesion(report.near_duplicates, lesion)
    return report


def check_main(path: str, as_json: bool) -> int:
    """`dermalens data check`: print the report; exit 0 if ok, 1 if not, 2 if unloadable."""
    try:
        report = check_dataset(path)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    return 0 if report.ok else 1
