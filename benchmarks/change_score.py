"""Validates `dermalens.runtime.change` on HAM10000: does the change score tell changed pairs
from unchanged ones, and what do its fitted scales and threshold flag on unseen lesions?

    python benchmarks/change_score.py --data ../shared/data/ham10000 \
        --out benchmarks/results/change-default.json

There are no real follow-up series here, so the pairs are built:

- unchanged: two different images (A, B) of the same lesion (metadata lesion_id with 2+
  images): re-photographs at another zoom, angle or light, with no known change;
- growth: A against B with its lesion scaled up by a linear factor of 1.1-1.3 about its
  centre (10-30% wider, 21-69% more area), pasted back through a feathered mask;
- darker: A against B with its lesion darkened (x 0.70-0.85);
- colour: A against B with its lesion blended 20-40% towards blue-grey, dark brown or red;
- other lesion: A against an image of another lesion.

Lesions are split in two by a seeded shuffle (grouped: a lesion's images are all in one part).
Two more scenarios use B alone: "same framing" compares B with a re-shot of B (a turn of up
to 10 degrees, a 4% shift, exposure x 0.9-1.1, JPEG 75-95), changed or not, as a follow-up
with the same device and zoom would.

On the fit part, per preset ("any framing" from the re-photographed pairs, "same framing"
from those): each part's scale is the 95th percentile over unchanged pairs; the weights are
a logistic regression with non-negative weights on part / scale, unchanged against every
change; a pair is "changed" when the combined score reaches the threshold or the lesion's area grew
by more than the size scale, and the threshold is the lowest that flags at most 10% of the
unchanged pairs (the rule, set before measuring); the malignant-probability margin is the 95th
percentile of |P(malignant) after - before| over them. The held-out part gives ROC AUC per
part and combined (unchanged against each kind of change, and against all) and the rates
of the flag, for both scenarios under both presets. The script prints each preset's
`runtime.change.ChangeScales(...)`; `--pairs FILE` keeps the scored pairs to refit later.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage, optimize, special
from sklearn.metrics import roc_auc_score

from dermalens.runtime.change import (
    ChangeScales,
    compare,
    describe,
    unit,
    working_image,
)
from dermalens.runtime.ood import pooled
from dermalens.runtime.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("growth", "darker", "colour", "other lesion")
TINTS = np.array([[100, 110, 140], [60, 35, 25], [180, 40, 40]], dtype=np.float32) / 255
PARTS = ("colour", "size", "structure")


def soft(mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float32), sigma), 0, 1)[..., None]


def grow(rgb: np.ndarray, mask: np.ndarray, factor: float) -> np.ndarray:
    """The lesion scaled up by `factor` about its centre of mass, pasted over the image."""
    cy, cx = ndimage.center_of_mass(mask)
    # output pixel (x, y) samples input ((x - cx) / f + cx, (y - cy) / f + cy)
    matrix = [1 / factor, 0, cx - cx / factor, 0, 1 / factor, cy - cy / factor]
    size = (rgb.shape[1], rgb.shape[0])
    image = Image.fromarray((rgb * 255).astype(np.uint8))
    big = image.transform(size, Image.AFFINE, matrix, Image.BILINEAR)
    big_mask = Image.fromarray(mask.astype(np.uint8) * 255).transform(
        size, Image.AFFINE, matrix, Image.BILINEAR
    )
    alpha = soft(np.asarray(big_mask) > 127)
    return alpha * (np.asarray(big, dtype=np.float32) / 255) + (1 - alpha) * rgb


def darken(rgb: np.ndarray, mask: np.ndarray, factor: float) -> np.ndarray:
    alpha = soft(mask)
    return alpha * rgb * factor + (1 - alpha) * rgb


def tint(rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray, weight: float) -> np.ndarray:
    alpha = soft(mask) * weight
    return alpha * colour + (1 - alpha) * rgb


def jitter(image: np.ndarray, rng) -> np.ndarray:
    """The same framing photographed again: a small turn and shift, exposure, JPEG."""
    pil = Image.fromarray(image)
    fill = tuple(int(v) for v in np.median(image.reshape(-1, 3), axis=0))
    shift = rng.uniform(-0.04, 0.04, 2) * pil.size
    pil = pil.rotate(rng.uniform(-10, 10), Image.BILINEAR, translate=tuple(shift), fillcolor=fill)
    pil = Image.fromarray(uint8(np.asarray(pil, dtype=np.float32) / 255 * rng.uniform(0.9, 1.1)))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=int(rng.integers(75, 96)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def model_outputs(predictor: Predictor, images: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """P(malignant) and unit-length pooled features of several images in one model call."""
    batch = np.stack([predictor.prepare(Image.fromarray(i)) for i in images])
    logits, fmap = predictor.forward(batch, tta=False)
    probs = predictor.calibrated(logits)
    return probs[:, predictor.malignant_mask].sum(axis=1), [unit(v) for v in pooled(fmap)]


def lesion_rows(predictor: Predictor, data: Path, lesion: str, ids: list[str], rng) -> dict:
    """One lesion: A, B and B's three synthetic changes, described, with P(malignant)."""
    a_id, b_id = rng.choice(ids, size=2, replace=False)
    a = uint8(working_image(data / "images" / f"{a_id}.jpg"))
    b_rgb = working_image(data / "images" / f"{b_id}.jpg")
    b_view = describe(uint8(b_rgb))
    images = {"A": a, "B": uint8(b_rgb)}
    params = {}
    if b_view.segmented:  # a change needs a lesion to change
        factor, dark = rng.uniform(1.1, 1.3), rng.uniform(0.70, 0.85)
        which, weight = int(rng.integers(len(TINTS))), rng.uniform(0.2, 0.4)
        images["growth"] = uint8(grow(b_rgb, b_view.mask, factor))
        images["darker"] = uint8(darken(b_rgb, b_view.mask, dark))
        images["colour"] = uint8(tint(b_rgb, b_view.mask, TINTS[which], weight))
        params = {"growth": factor, "darker": dark, "colour": f"tint{which}:{weight:.2f}"}
        for name in ("B", *KINDS[:3]):  # the same framing again, changed or not
            images[f"{name}~"] = jitter(images[name], rng)
    p_mal, features = model_outputs(predictor, list(images.values()))
    views = {
        name: replace(describe(image), embedding=vector)
        for (name, image), vector in zip(images.items(), features)
    }
    return {"lesion": lesion, "views": views, "p_mal": dict(zip(images, p_mal)), "params": params}


def pairs_of(rows: list[dict], rng) -> pd.DataFrame:
    """Every pair to score. "re-photographed": A against B (unchanged), B's synthetic changes
    and another lesion; "same framing": B against a re-shot of B, changed or not."""
    out = []
    for k, row in enumerate(rows):
        views, p = row["views"], row["p_mal"]
        other = rows[(k + 1 + int(rng.integers(len(rows) - 1))) % len(rows)]
        cases = [("re-photographed", "unchanged", "A", views["B"], p["B"], None)]
        for kind in KINDS[:3]:
            if kind in views:
                cases.append(
                    ("re-photographed", kind, "A", views[kind], p[kind], row["params"][kind])
                )
        cases.append(
            ("re-photographed", "other lesion", "A", other["views"]["A"], other["p_mal"]["A"], None)
        )
        if "B~" in views:
            cases.append(("same framing", "unchanged", "B", views["B~"], p["B~"], None))
            for kind in KINDS[:3]:
                cases.append(
                    (
                        "same framing",
                        kind,
                        "B",
                        views[f"{kind}~"],
                        p[f"{kind}~"],
                        row["params"][kind],
                    )
                )
        for scenario, kind, before, after, p_after, param in cases:
            score = compare(views[before], after)  # the raw parts; scales come later
            out.append(
                {
                    "lesion": row["lesion"],
                    "scenario": scenario,
                    "kind": kind,
                    "param": param,
                    "p_mal_rise": float(p_after - p[before]),
                    **score_row(score),
                }
            )
    return pd.DataFrame(out)


def score_row(score) -> dict:
    return {
        "colour": score.colour,
        "size": score.size,
        "growth": score.growth,
        "structure": score.structure,
        "reliable": score.reliable,
    }


def ratios(frame: pd.DataFrame, scales: ChangeScales) -> np.ndarray:
    return np.stack([frame[part] / getattr(scales, part) for part in PARTS], axis=1)


def combined(frame: pd.DataFrame, scales: ChangeScales) -> np.ndarray:
    """`runtime.change.compare`'s score, for a whole table at once."""
    z = scales.bias + ratios(frame, scales) @ np.array(scales.weights)
    return 1 / (1 + np.exp(-z))


def fit_weights(x: np.ndarray, changed: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression with non-negative weights (a larger part never lowers the score),
    classes weighted equally, a little L2 on the weights."""
    sign = np.where(changed, 1.0, -1.0)
    weight = np.where(changed, 0.5 / changed.mean(), 0.5 / (1 - changed.mean()))

    def loss(theta):
        z = sign * (x @ theta[:-1] + theta[-1])
        grad_z = -sign * weight * special.expit(-z) / len(x)
        value = float(np.mean(weight * np.logaddexp(0, -z)) + 1e-3 * theta[:-1] @ theta[:-1])
        grad = np.append(x.T @ grad_z + 2e-3 * theta[:-1], grad_z.sum())
        return value, grad

    bounds = [(0, None)] * x.shape[1] + [(None, None)]
    theta = optimize.minimize(loss, np.zeros(x.shape[1] + 1), jac=True, bounds=bounds).x
    return theta[:-1], float(theta[-1])


def grown(frame: pd.DataFrame, scales: ChangeScales) -> np.ndarray:
    """`compare`'s other reason: the lesion's area grew past the size scale."""
    return (frame.growth >= scales.size).to_numpy()


def union_threshold(score: np.ndarray, grew: np.ndarray, rate: float = 0.10) -> float:
    """The lowest threshold at which at most `rate` of unchanged pairs are flagged, by the
    score or by growth."""
    for t in np.sort(score):
        if np.mean((score >= t) | grew) <= rate:
            return float(t)
    return float(score.max() + 1e-9)


def fit(frame: pd.DataFrame, scenario: str) -> ChangeScales:
    """Scales, weights, threshold and the P(malignant) margin from the fit part's pairs of
    one scenario."""
    frame = frame[frame.scenario == scenario]
    same = frame[frame.kind == "unchanged"]
    scales = ChangeScales(
        **{p: float(np.percentile(same[p], 95)) for p in PARTS},
        weights=(1.0, 1.0, 1.0),
        bias=0.0,
        threshold=0.5,
        malignant_margin=1.0,
    )
    weights, bias = fit_weights(ratios(frame, scales), (frame.kind != "unchanged").to_numpy())
    scales = replace(scales, weights=tuple(float(w) for w in weights), bias=bias)
    return replace(
        scales,
        threshold=union_threshold(combined(same, scales), grown(same, scales)),
        malignant_margin=float(np.percentile(same.p_mal_rise.abs(), 95)),
        fitted=f"benchmarks/change_score.py, 2026-12-03, HAM10000 fit lesions, {scenario}",
    )


def auc(frame: pd.DataFrame, column: str, kinds) -> float | None:
    part = frame[frame.kind.isin(["unchanged", *kinds])]
    labels = (part.kind != "unchanged").to_numpy()
    if labels.all() or not labels.any():
        return None
    return round(float(roc_auc_score(labels, part[column])), 4)


def report(frame: pd.DataFrame, scales: ChangeScales) -> dict:
    margin = scales.malignant_margin
    frame = frame.assign(score=combined(frame, scales), max_ratio=ratios(frame, scales).max(axis=1))
    frame = frame.assign(changed=(frame.score >= scales.threshold) | grown(frame, scales))
    frame = frame.assign(flag=frame.changed | (frame.p_mal_rise > margin))
    out = {}
    for scenario, part in frame.groupby("scenario"):
        kinds = [k for k in KINDS if k in set(part.kind)]
        groups = {kind: [kind] for kind in kinds} | {"all changes": kinds}
        columns = [*PARTS, "score", "max_ratio", "p_mal_rise"]
        aucs = {name: {c: auc(part, c, ks) for c in columns} for name, ks in groups.items()}
        rates = {}
        for kind, rows in part.groupby("kind"):
            rates[kind] = {
                "pairs": len(rows),
                "score_flags": round(float(rows.changed.mean()), 4),
                "flag_with_p_mal": round(float(rows.flag.mean()), 4),
                "reliable": round(float(rows.reliable.mean()), 4),
            }
        growth = part[part.kind == "growth"]
        factor = growth.param.astype(float)
        rates["growth by factor"] = {
            f"{lo:.1f}-{lo + 0.1:.1f}": round(
                float(growth.changed[(factor >= lo) & (factor < lo + 0.1)].mean()), 4
            )
            for lo in (1.1, 1.2)
        }
        out[scenario] = {"auc": aucs, "rates": rates}
    return out


def check_library(row: dict, scales: ChangeScales) -> None:
    """The table's vectorised score is `compare`'s."""
    views = row["views"]
    frame = pd.DataFrame([score_row(compare(views["A"], views["B"], scales))])
    expected = compare(views["A"], views["B"], scales).score
    assert abs(float(combined(frame, scales)[0]) - expected) < 1e-9, "score formula drifted"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "src/dermalens/bundled/default")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ham10000")
    parser.add_argument("--limit", type=int, default=0, help="lesions (0: every one with 2+)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/change.json")
    parser.add_argument(
        "--pairs",
        type=Path,
        help="CSV of scored pairs: written, or read to refit without rescoring",
    )
    args = parser.parse_args(argv)
    t0 = time.time()
    meta = pd.read_csv(args.data / "metadata.csv")
    groups = meta.groupby("lesion_id")["image_id"].apply(list)
    groups = groups[groups.map(len) >= 2]
    rng = np.random.default_rng(args.seed)
    lesions = list(rng.permutation(groups.index))[: args.limit or None]
    fit_set = set(lesions[: len(lesions) // 2])
    predictor = Predictor(args.model, backend="onnx", threads=args.threads, ood=False)
    if args.pairs and args.pairs.is_file():  # refit and report without rescoring
        table = pd.read_csv(args.pairs)
        check = None
    else:
        rows = []
        for k, lesion in enumerate(lesions):
            rows.append(lesion_rows(predictor, args.data, lesion, groups[lesion], rng))
            if k % 100 == 0:
                print(f"{k}/{len(lesions)} lesions, {time.time() - t0:.0f} s", file=sys.stderr)
        table = pd.concat(
            [
                pairs_of([r for r in rows if (r["lesion"] in fit_set) == fitting], rng)
                for fitting in (True, False)
            ]
        )
        check = rows[0]
        if args.pairs:
            table.to_csv(args.pairs, index=False)
    table["part"] = np.where(table.lesion.isin(fit_set), "fit", "held-out")
    frames = {name: table[table.part == name] for name in ("fit", "held-out")}
    parts = {name: frame.lesion.unique() for name, frame in frames.items()}
    presets = {"any framing": "re-photographed", "same framing": "same framing"}
    fitted = {name: fit(frames["fit"], scenario) for name, scenario in presets.items()}
    if check is not None:
        check_library(check, fitted["any framing"])
    result = {
        "command": " ".join(sys.argv),
        "model": predictor.bundle.version,
        "lesions": {name: len(part) for name, part in parts.items()},
        "seed": args.seed,
        "presets": {
            name: {
                "fitted on": presets[name],
                "scales": asdict(scales),
                "fit": report(frames["fit"], scales),
                "held-out": report(frames["held-out"], scales),
            }
            for name, scales in fitted.items()
        },
        "seconds": round(time.time() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, scales in fitted.items():
        held_out = result["presets"][name]["held-out"]
        print(name, json.dumps({sc: r["rates"] for sc, r in held_out.items()}))
        print("ChangeScales(" + ", ".join(f"{k}={v!r}" for k, v in asdict(scales).items()) + ")")


if __name__ == "__main__":
    main()
