"""Fitting the scope gate (`runtime.scope`) on data licensed for training, thresholds on validation.

    python -m dermalens.evaluation.scope_fit [--out src/dermalens/bundled/gate] [--cache DIR]

The dermoscopic score's bank is a class-balanced sample of the HAM10000 training part (split
`benchmarks/splits/ham10000-seed0.csv`); its threshold `derm_above` is the quantile of
HAM10000 validation scores that leaves `Targets.max_ham_away` of them out. The lesion
score's bank is the PAD-UFES-20 training part (the clinical model's cross-validation fold 0,
`benchmarks/splits/pad-ufes20-cv0.csv`); `lesion_above` is the quantile of held-out lesion
scores (validation images, and training images scored without any image of their own
patient) that leaves `max_pad_away` of them out. Both scores are also computed in the scene
model's features (`runtime.scene`: `scene.onnx`, written here by `export.scene_export`), on
the same banks; an image must be within both thresholds of a kind, so each kind's budget is
split: `scene_share` of it to the scene score, the rest to the feature model's (each a
quantile of the same validation scores). The logistic regression (dermoscopic against
clinical, on pooled features and `scope_stats`) is fitted on both training parts, C chosen
on validation log loss; `kind_at` is the highest cut that sends at most
`max_ham_to_clinical` of HAM10000 validation images to the clinical model. The colour
judge's bank is both kinds' training images. Synthetic photos made from PAD-UFES-20 training
images (`synthetic_other_skin`: mosaics of many lesions, a lesion far away on a wide field
of skin, lesion-free skin, drawn rashes and hair) and the probe images are scored in the
report; no real photo of a rash, nail or hair is used (none is licensed for training), and
DermNet NZ plays no part.

"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from tqdm import tqdm

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluation.ood_fit import balanced_sample, probe_images
from dermalens.evaluation.synthetic_skin import synthetic_other_skin
from dermalens.files import atomic_write_text, now, sha256
from dermalens.imageio import ImageError
from dermalens.runtime.ood import knn_distance, pixel_stats, pooled, unit_rows
from dermalens.runtime.predictor import Predictor
from dermalens.runtime.scene import SCENE_ONNX, SceneModel
from dermalens.runtime.scope import (
    GATE_DIR,
    GATE_JSON,
    GATE_NPZ,
    Gate,
    GateFit,
    scope_stats,
    thumbnails,
)

HAM, PAD = Path("../shared/data/ham10000"), Path("../shared/data/pad-ufes-20")
HAM_SPLIT = Path("benchmarks/splits/ham10000-seed0.csv")
PAD_SPLIT = Path("benchmarks/splits/pad-ufes20-cv0.csv")  # the clinical model's CV fold 0


@dataclass
class Targets:
    max_ham_away: float = 0.005  # HAM10000 validation images unlike dermoscopic lesions
    max_ham_to_clinical: float = 0.005  # HAM10000 validation images sent to the clinical model
    max_pad_away: float = 0.015  # PAD-UFES-20 held-out lesions called "not a lesion close-up"
    max_colour_away: float = 0.002  # skin validation images called "not skin" by colour
    k: int = 5  # which nearest neighbour's distance is a score (the PAD bank is small)
    bank_images: int = 1000  # HAM10000 training images in the banks (classes balanced)
    scene_share: float = 0.5  # of max_ham_away and max_pad_away, spent on the scene scores
    seed: int = 0


def extract(
    predictor: Predictor,
    sources: Sequence,
    batch_size: int = 32,
    progress: bool = True,
    scene: SceneModel | None = None,
) -> dict[str, np.ndarray]:
    """Image-only outputs per source (a path or an array): pooled features, `pixel_stats`,
    calibrated probabilities and `thumbnails` (and `scene` features with a scene model);
    `ok` False where an image cannot be read."""
    n = len(sources)
    out: dict[str, np.ndarray] = {"ok": np.zeros(n, bool)}
    for start in tqdm(range(0, n, batch_size), disable=not progress, desc="features"):
        chunk, index = [], []
        for i in range(start, min(n, start + batch_size)):
            try:
                chunk.append(predictor.prepare(sources[i]))
                index.append(i)
            except ImageError:
                continue
        if not chunk:
            continue
        batch = np.stack(chunk)
        logits, fmap = predictor.forward(batch, None, tta=False)
        parts = {
            "features": pooled(fmap).astype(np.float16),
            "pixels": pixel_stats(batch, predictor.pre),
            "probs": predictor.calibrated(logits).astype(np.float32),
            "thumbs": thumbnails(batch, predictor.pre),
        }
        if scene is not None:
            parts["scene"] = scene.features(batch).astype(np.float16)
        for key, value in parts.items():
            if key not in out:
                fill = 0 if value.dtype == np.uint8 else np.nan
                out[key] = np.full((n, *value.shape[1:]), fill, value.dtype)
            out[key][index] = value
        out["ok"][index] = True
    return out


def cached(
    predictor: Predictor,
    paths: Sequence[Path],
    cache: Path | None,
    tag: str,
    scene: SceneModel | None = None,
) -> dict[str, np.ndarray]:
    """`extract` over image files, kept in `cache/<tag>.npz` keyed by folder and file name
    (extracted again when the cache lacks an image, or the scene features asked for)."""
    names = ["/".join(Path(p).parts[-2:]) for p in paths]
    file = cache / f"{tag}.npz" if cache else None
    if file is not None and file.is_file():
        with np.load(file) as npz:
            stored = {k: npz[k] for k in npz.files}
        where = {str(n): i for i, n in enumerate(stored.pop("names"))}
        if all(n in where for n in names) and (scene is None or "scene" in stored):
            rows = [where[n] for n in names]
            return {k: v[rows] for k, v in stored.items()}
    arrays = extract(predictor, list(paths), scene=scene)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, names=np.asarray(names), **arrays)
    return arrays


def pad_split(path: Path = PAD_SPLIT) -> pd.DataFrame:
    """PAD-UFES-20's patient-grouped split (the clinical model's CV fold 0)."""
    return load_split(load_dataset(PAD), path)


def _loo_knn(x: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    """k-NN cosine distance of each unit row to the others, leaving out its own group."""
    sims = x @ x.T
    sims[groups[:, None] == groups[None, :]] = -np.inf
    return 1.0 - np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k]


def fit_kind(x_train, y_train, x_val, y_val, seed: int = 0):
    """Logistic regression dermoscopic (1) against clinical (0), C chosen on validation."""
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    best = None
    for c in (0.001, 0.01, 0.1):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
        model.fit((x_train - mean) / scale, y_train)
        loss = log_loss(y_val, model.predict_proba((x_val - mean) / scale)[:, 1], labels=[0, 1])
        if best is None or loss < best[0]:
            best = (loss, c, model)
    loss, c, model = best
    return mean, scale, model.coef_[0].astype(np.float32), float(model.intercept_[0]), c, loss


def _part(arrays: dict, split: np.ndarray, name: str):
    keep = (split == name) & arrays["ok"]
    feats = arrays["features"][keep].astype(np.float32)
    scene = arrays["scene"][keep].astype(np.float32)
    return feats, scope_stats(arrays["thumbs"][keep]), arrays["pixels"][keep], keep, scene


def _bank(x: np.ndarray, k: int, groups: np.ndarray | None = None):
    """Unit rows and their median k-NN distance, leaving out each row's own group (or row)."""
    bank = unit_rows(x)
    groups = np.arange(len(x)) if groups is None else groups
    loo = _loo_knn(bank, groups, k)
    return bank, float(np.median(loo)), loo


def choose_kind_at(p_ham: np.ndarray, n_ham: int, most: float) -> float:
    """The highest p_dermoscopic cut (so the fewest clinical close-ups go to the dermoscopy
    model) that sends at most `most` of the `n_ham` HAM10000 validation images to the
    clinical model; `p_ham` are those of them that look like both kinds. Dermoscopy keeps
    the benefit of the doubt: its model's numbers must not drop."""
    grid = np.linspace(0.01, 0.99, 99)
    allowed = [t for t in grid if (p_ham < t).sum() <= most * n_ham]
    return float(max(allowed, default=grid[0]))


def fit_gate(ham: dict, pad: dict, ham_split, pad_split, targets: Targets):
    """GateFit and its report from cached arrays of HAM10000 and PAD-UFES-20 (all rows)."""
    hsplit, psplit = ham_split["split"].to_numpy(), pad_split["split"].to_numpy()
    h_tr, h_va = _part(ham, hsplit, "train"), _part(ham, hsplit, "val")
    p_tr, p_va = _part(pad, psplit, "train"), _part(pad, psplit, "val")
    x_tr = np.concatenate([np.hstack(h_tr[:2]), np.hstack(p_tr[:2])])
    y_tr = np.r_[np.ones(len(h_tr[0])), np.zeros(len(p_tr[0]))]
    x_va = np.concatenate([np.hstack(h_va[:2]), np.hstack(p_va[:2])])
    y_va = np.r_[np.ones(len(h_va[0])), np.zeros(len(p_va[0]))]
    mean, scale, coef, intercept, c, loss = fit_kind(x_tr, y_tr, x_va, y_va, targets.seed)
    p_val = 1 / (1 + np.exp(-(((x_va - mean) / scale) @ coef + intercept)))
    k = targets.k
    # dermoscopic score: a class-balanced sample of HAM10000 training images
    ham_train = ham_split[(hsplit == "train") & ham["ok"]]
    rows = ham_split.index.get_indexer(balanced_sample(ham_train, targets.bank_images).index)
    share = targets.scene_share
    derm_bank, derm_scale, _ = _bank(ham["features"][rows].astype(np.float32), k)
    derm_val = knn_distance(unit_rows(h_va[0]), derm_bank, k) / derm_scale
    derm_pad_val = knn_distance(unit_rows(p_va[0]), derm_bank, k) / derm_scale
    derm_above = float(np.quantile(derm_val, 1 - targets.max_ham_away * (1 - share)))
    s_derm_bank, s_derm_scale, _ = _bank(ham["scene"][rows].astype(np.float32), k)
    s_derm_val = knn_distance(unit_rows(h_va[4]), s_derm_bank, k) / s_derm_scale
    s_derm_pad_val = knn_distance(unit_rows(p_va[4]), s_derm_bank, k) / s_derm_scale
    s_derm_above = float(np.quantile(s_derm_val, 1 - targets.max_ham_away * share))
    # lesion score: PAD-UFES-20 training bank; held out = val + train without own patient
    groups = pad_split["patient_id"].to_numpy()[p_tr[3]]
    lesion_bank, lesion_scale, loo = _bank(p_tr[0], k, groups)
    lesion_val = knn_distance(unit_rows(p_va[0]), lesion_bank, k) / lesion_scale
    held = np.r_[loo / lesion_scale, lesion_val]
    lesion_above = float(np.quantile(held, 1 - targets.max_pad_away * (1 - share)))
    lesion_ham_val = knn_distance(unit_rows(h_va[0]), lesion_bank, k) / lesion_scale
    s_lesion_bank, s_lesion_scale, s_loo = _bank(p_tr[4], k, groups)
    s_lesion_val = knn_distance(unit_rows(p_va[4]), s_lesion_bank, k) / s_lesion_scale
    s_held = np.r_[s_loo / s_lesion_scale, s_lesion_val]
    s_lesion_above = float(np.quantile(s_held, 1 - targets.max_pad_away * share))
    s_lesion_ham_val = knn_distance(unit_rows(h_va[4]), s_lesion_bank, k) / s_lesion_scale
    derm_h = (derm_val <= derm_above) & (s_derm_val <= s_derm_above)
    derm_p = (derm_pad_val <= derm_above) & (s_derm_pad_val <= s_derm_above)
    lesion_h = (lesion_ham_val <= lesion_above) & (s_lesion_ham_val <= s_lesion_above)
    held_ok = (held <= lesion_above) & (s_held <= s_lesion_above)
    lesion_p = held_ok[len(loo) :]
    both_h, both_p = derm_h & lesion_h, derm_p & lesion_p
    n_h = len(h_va[0])
    kind_at = choose_kind_at(p_val[:n_h][both_h], n_h, targets.max_ham_to_clinical)
    # colour: the same HAM10000 sample and all PAD training images
    colours, colour_scale, _ = _bank(np.r_[ham["pixels"][rows, 3:], p_tr[2][:, 3:]], k)
    val_colours = np.r_[h_va[2][:, 3:], p_va[2][:, 3:]]
    colour_val = knn_distance(unit_rows(val_colours), colours, k) / colour_scale
    colour_above = float(np.quantile(colour_val, 1 - targets.max_colour_away))
    fit = GateFit(
        mean.astype(np.float32), scale.astype(np.float32), coef, intercept, kind_at,
        derm_bank.astype(np.float16), derm_scale, derm_above,
        lesion_bank.astype(np.float16), lesion_scale, lesion_above,
        colours.astype(np.float16), colour_scale, colour_above,
        s_derm_bank.astype(np.float16), s_derm_scale, s_derm_above,
        s_lesion_bank.astype(np.float16), s_lesion_scale, s_lesion_above, k,
    )  # fmt: skip
    report = {
        "kind_model": f"logistic regression, C={c} (validation log loss {loss:.4f})",
        "train_images": {"dermoscopic": len(h_tr[0]), "clinical": len(p_tr[0])},
        "val_images": {"dermoscopic": n_h, "clinical": len(p_va[0])},
        "val_ham_unlike_dermoscopic": float((~derm_h).mean()),
        "held_out_pad_unlike_clinical": float((~held_ok).mean()),
        "val_ham_unlike_dermoscopic_by_scene": float((s_derm_val > s_derm_above).mean()),
        "held_out_pad_unlike_clinical_by_scene": float((s_held > s_lesion_above).mean()),
        "val_like_both": {"dermoscopic": float(both_h.mean()), "clinical": float(both_p.mean())},
        "val_ham_to_clinical": float((both_h & (p_val[:n_h] < kind_at)).mean()),
        "val_pad_to_dermoscopic": float((both_p & (p_val[n_h:] >= kind_at)).mean()),
        "colour_val_rejected": float((colour_val > colour_above).mean()),
    }
    return fit, report


def probe_report(gate: Gate, predictor: Predictor, images: dict[str, np.ndarray]) -> dict:
    """Kinds the gate gives each family of named images (synthetic or probe)."""
    batch = np.stack([predictor.prepare(im) for im in images.values()])
    _, fmap = predictor.forward(batch, tta=False)
    pre = predictor.pre
    scene = gate.scene_features(batch)
    decisions = gate.decide(pooled(fmap), pixel_stats(batch, pre), thumbnails(batch, pre), scene)
    counts: dict[str, dict[str, int]] = {}
    for name, d in zip(images, decisions):
        family = name.rsplit(" ", 1)[0] if name[-1].isdigit() else "probe"
        counts.setdefault(family, {}).setdefault(d.kind, 0)
        counts[family][d.kind] += 1
    return counts


def save_gate(folder: Path, fit: GateFit, info: dict) -> Gate:
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / GATE_NPZ
    npz.write_bytes(fit.to_bytes())
    info = {"format": 1, **info, "gate_sha256": sha256(npz)}
    atomic_write_text(folder / GATE_JSON, json.dumps(info, indent=2))
    return Gate(fit, info, folder)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=GATE_DIR)
    p.add_argument("--feature-model", default="default", help="folder under bundled/")
    p.add_argument("--cache", type=Path, help="folder to keep extracted features in")
    args = p.parse_args(argv)
    bundle = load_bundle(GATE_DIR.parent / args.feature_model)
    predictor = Predictor(bundle, backend="onnx", threads=1, precision="fp32")
    # torch: only to write the scene model (the train extra)
    from dermalens.export.scene_export import export_scene

    pre = predictor.pre
    scene_check = export_scene(args.out / SCENE_ONNX, pre.height, pre.width)
    scene = SceneModel(args.out / SCENE_ONNX, threads=1)
    ham_split = load_split(load_dataset(HAM), HAM_SPLIT).reset_index(drop=True)
    pads = pad_split().reset_index(drop=True)
    paths = [Path(x) for x in ham_split["path"]]
    ham = cached(predictor, paths, args.cache, "default-ham", scene)
    pad = cached(predictor, [Path(x) for x in pads["path"]], args.cache, "default-pad", scene)
    targets = Targets()
    fit, report = fit_gate(ham, pad, ham_split, pads, targets)
    train_pad = [Path(x) for x in pads.loc[pads["split"] == "train", "path"]]
    info = {
        "created": now(),
        "feature_model": args.feature_model,
        "feature_model_version": bundle.version,
        "scene_model": scene_check,
        "scene_sha256": sha256(args.out / SCENE_ONNX),
        "routes": {"dermoscopic": "default", "clinical": "clinical"},
        "fitted_on": {"dermoscopic": str(HAM_SPLIT), "clinical": str(PAD_SPLIT)},
        "targets": vars(targets),
        "report": report,
    }
    gate = save_gate(args.out, fit, info)
    images = {**synthetic_other_skin(train_pad, seed=targets.seed), **probe_images()}
    info["report"]["synthetic_and_probes"] = probe_report(gate, predictor, images)
    save_gate(args.out, fit, info)
    print(json.dumps(info["report"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
