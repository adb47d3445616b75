"""Would the scope gate's scene-space dermoscopic score help the shift warning?

    python benchmarks/shift_scene.py

Validation halves only, as `shift_select.py`: the 13 statistics against the 13 plus the
gate's k-NN score in the scene model's features (`runtime.scope`), target 0.03, the held
half clean and corrupted (40 images, all corruptions at severities 3-5).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dermalens.data.dedupe import drop_duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluation import corruptions as C
from dermalens.evaluation.shift_fit import fit_shift
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.scope import load_gate

sys.path.insert(0, str(Path(__file__).parent))
from shift_warning import decode, measure  # noqa: E402  (benchmarks share helpers)


def scene_score(pred: Predictor, gate, images) -> np.ndarray:
    """The gate's dermoscopic k-NN score in the scene model's features."""
    out = []
    for s in range(0, len(images), 64):
        b = np.stack([pred.prepare(im) for im in images[s : s + 64]])
        out.append(gate._knn(gate.scene_features(b), gate._scene_derm, gate.fit.scene_derm_scale))
    return np.concatenate(out)


def share(monitor, x: np.ndarray) -> float:
    """Flagged share of statistics `x` (columns as the monitor's; 14 here, so not `check`,
    which names the 13 of `runtime.shift.STATS`)."""
    with np.errstate(invalid="ignore"):
        return float(((x < monitor.low) | (x > monitor.high)).any(axis=1).mean())


def main(argv=None) -> int:
    pred = Predictor("src/dermalens/bundled/default", threads=1)
    gate = load_gate()

    def both(images):
        return np.c_[measure(pred, images), scene_score(pred, gate, images)]

    split = Path("benchmarks/splits/ham10000-seed0.csv")
    table = drop_duplicate_extras(load_split(load_dataset("../shared/data/ham10000"), split))
    val = table[table.split == "val"].sort_values(["label", "image_id"])
    lesions = val["lesion_id"].fillna(val["image_id"]).astype(str)
    half = lesions.map(lambda s: C.image_seed(s) % 2).to_numpy()
    fit_part, held = val[half == 0], val[half == 1]
    fit_stats, held_stats = both(decode(fit_part.path)), both(decode(held.path))
    chosen = held.iloc[:: max(1, len(held) // 40)][:40]
    clean = decode(chosen.path)
    seeds = [C.image_seed(i) for i in chosen.image_id]
    corrupted = [
        both([C.apply(im, name, sev, seed=q) for im, q in zip(clean, seeds)])
        for name in C.CORRUPTIONS
        for sev in (3, 4, 5)
    ]
    for label, cols in (("13 stats", slice(0, -1)), ("13 + scene", slice(None))):
        m = fit_shift(fit_stats[:, cols], 0.03)
        mean_corrupted = np.mean([share(m, v[:, cols]) for v in corrupted])
        print(
            f"{label}: fit half {m.expected:.3f}  held clean {share(m, held_stats[:, cols]):.3f}  "
            f"held corrupted {mean_corrupted:.3f}"
        )
    q50, q99 = np.quantile(fit_stats[:, -1], [0.5, 0.99])
    print(f"scene score on the fit half: median {q50:.3f}, 99th percentile {q99:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
