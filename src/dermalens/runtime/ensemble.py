"""Ensembles of bundles: several networks behind one self-describing bundle.

    dermalens ensemble A B --out DIR --data DATA --split-file runs/x/split.csv

An ensemble bundle is a folder with its own `bundle.json` (classes, preprocessing,
calibration, thresholds, metrics) and a `members/` folder that holds a copy of each
member bundle, so the folder moves and serves as one piece.

Its probabilities are the mean of the members' calibrated probabilities,
p = mean_m(p_m) (the engine returns log p as its logits, so the ensemble's own
temperature is 1 and its class bias 0). Its answer is argmax(log p + mean_m(d_m)), with
d_m member m's decision bias: the members' class-weighted ranking, carried over.
Averaging calibrated probabilities keeps them calibrated (refitting on the mean of the
members' logits did worse; benchmarks/RESULTS.md, "Ensemble bundles"). Calibrating an
ensemble (`dermalens calibrate`) therefore fits only its abstention and triage
thresholds and its OOD check. The feature map (for the OOD check and the heatmap) is the
first member's.

Members must share classes, preprocessing and metadata fields, and must have been
trained on the same split: a member trained on another split has seen the lesions that
the ensemble is evaluated on.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dermalens.bundle import (
    DESCRIPTION,
    ONNX,
    WEIGHTS,
    Bundle,
    BundleError,
    check_compatible,
    load_bundle,
    load_ensemble_members,
    versions,
)
from dermalens.files import now, replace_dir
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.engines import Engine

MEMBERS = "members"


COPIED = (DESCRIPTION, ONNX, WEIGHTS)  # what a member needs to serve (no variants, no OOD)


def _split_of(bundle: Bundle) -> tuple:
    """What identifies the split a member was trained on: a hash of its split table when
    one can be found (the run folder's `split.csv` beside the bundle, or the config's
    `split_file`), else the split file's name or the split seed."""
    cfg = bundle.train_config
    split_file = cfg.get("split_file") or ""
    for candidate in (bundle.path.parent / "split.csv", Path(split_file) if split_file else None):
        if candidate is not None and candidate.is_file():
            try:
                table = pd.read_csv(candidate, usecols=["image_id", "split"], dtype=str)
            except (ValueError, OSError):  # not a split table: fall back to the names
                continue
            rows = sorted(zip(table["image_id"], table["split"], strict=True))
            return ("sha256", hashlib.sha256(repr(rows).encode()).hexdigest()[:16])
    return ("file", Path(split_file).name) if split_file else ("seed", cfg.get("split_seed"))


def check_members(members: list[Bundle], allow_other_splits: bool = False) -> None:
    """Raise BundleError unless the members can be averaged (and evaluated) together."""
    check_compatible(members)
    first = members[0]
    for m in members[1:]:
        if not allow_other_splits and _split_of(m) != _split_of(first):
            raise BundleError(
                f"{m.path}: trained on split {_split_of(m)}, {first.path} on "
                f"{_split_of(first)}; a member trained on another split has seen the test "
                f"lesions (allow_other_splits only for data none of them trained on)"
            )


def build_ensemble(
    members: list[str | Path], out: str | Path, name: str = "", allow_other_splits: bool = False
) -> Bundle:
    """Copy `members` (each calibrated) into a new ensemble bundle at `out`.

    Fit its thresholds and OOD check next (`dermalens calibrate OUT DATA --split-file
    ...`). An existing `out` is replaced only once the new bundle is complete."""
    bundles = [load_bundle(m) for m in members]
    check_members(bundles, allow_other_splits)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        paths = []
        for i, b in enumerate(bundles):
            rel = f"{MEMBERS}/{i}-{b.name}"
            (staging / rel).mkdir(parents=True)
            for f in COPIED:
                if b.has(f):
                    shutil.copy2(b.file(f), staging / rel / f)
            paths.append(rel)
        first = bundles[0]
        digest = hashlib.sha256("\n".join(b.version for b in bundles).encode()).hexdigest()
        decision = np.mean([Calibration.of(b).decision_bias for b in bundles], axis=0)
        ensemble = Bundle(
            path=staging,
            name=name or "+".join(b.name for b in bundles),
            classes=list(first.classes),
            preprocessing=first.preprocessing,
            arch={"model": "ensemble", "members": [b.arch for b in bundles]},
            metadata_fields=list(first.metadata_fields),
            decision_bias=[float(d) for d in decision],
            train_config=dict(first.train_config),
            info={
                "members": paths,
                "member_versions": [b.version for b in bundles],
                "members_sha256": digest,
                "created": now(),
                "versions": versions(),
                "weight_source": [b.info.get("weight_source", "") for b in bundles],
                "card": {
                    **(first.info.get("card") or {}),
                    "ensemble": f"mean of the calibrated probabilities of {len(bundles)} "
                    f"networks ({', '.join(b.version for b in bundles)}); heatmap and "
                    f"OOD features from the first",
                },
            },
        )
        ensemble.save_description()
        load_ensemble_members(ensemble)  # the copies load and verify
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out)


class EnsembleEngine(Engine):
    """Runs every member's engine. Returns log(mean of the members' calibrated
    probabilities) as its logits, and the first member's feature map.

    `engines` run the `members` in order (`runtime.selection.make_engine` builds them, with
    ONNX Runtime threads that sleep between calls, so one member's idle threads do not take
    the cores from the next member's run).
    """

    name = "ensemble"

    def __init__(self, bundle: Bundle, members: list[Bundle], engines: list[Engine]):
        self.bundle = bundle
        self.members = members
        self.engines = engines
        self.calibrations = [Calibration.of(m) for m in members]
        self.name = "ensemble(" + ", ".join(e.name for e in self.engines) + ")"

    def run(self, batch, meta=None):
        total, fmap = 0.0, None
        for engine, calibration in zip(self.engines, self.calibrations):
            logits, features = engine.run(batch, meta)
            total = total + calibration.probabilities(logits[None])
            fmap = features if fmap is None else fmap
        mean = total / len(self.engines)
        return np.log(np.maximum(mean, 1e-30)).astype(np.float32), fmap

    def head(self):
        return self.engines[0].head()
