"""The scope gate measured: who gets a definite triage, who is turned away, routing.

    python benchmarks/scope_gate.py --cache runs/gate-cache --out benchmarks/results

Sets: the HAM10000 test part (`benchmarks/splits/ham10000-seed0.csv`), the PAD-UFES-20
test part (`benchmarks/splits/pad-ufes-20-seed0.csv`), the DermNet NZ photos
(`../shared/data/dermnet-nz/images`, measuring only: nothing here is fitted or chosen on
it), split into lesion folders (`lesion_conditions.txt`) and every other folder, the 12
probe images and the 13 held-out scikit-image images of `benchmarks/ood_images.py`.
Each image goes through the installed router exactly as `predict_folder` sends it (the
gate on the feature model's outputs, then the routed model's own result and OOD check);
the model outputs are cached per bundle in --cache (`evaluation.scope_fit.cached`).
Writes `scope-<gate sha12>.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.evaluation.ood_fit import probe_images
from dermalens.evaluation.scope_fit import HAM, HAM_SPLIT, cached, extract, pad_split
from dermalens.runtime.predictor import Prediction, Predictor
from dermalens.runtime.router import Router

DERMNET = Path("../shared/data/dermnet-nz")
DEFINITE = ("benign", "malignant")


def outputs(router: Router, predictor: Predictor, sources, cache: Path, tag: str) -> dict:
    """A bundle's cached image-only outputs; a bundle with the feature model's weights
    (a stand-in) shares that model's cache."""
    same = predictor.bundle.info.get("onnx_sha256") == router.feature.bundle.info.get("onnx_sha256")
    name = "default" if same else predictor.bundle.name
    scene = router.gate.scene if predictor is router.feature else None  # the gate reads it
    if isinstance(sources[0], np.ndarray):
        return extract(predictor, sources, progress=False, scene=scene)
    return cached(predictor, sources, cache, f"{name}-{tag}", scene)


def answers(router: Router, sources, cache: Path, tag: str) -> list[Prediction]:
    """What the router answers for each source, from cached outputs (as predict_batch)."""
    base = outputs(router, router.feature, sources, cache, tag)
    thumbs, pixels = base["thumbs"], base["pixels"]
    features, scene = (base[k].astype(np.float32) for k in ("features", "scene"))
    decisions = router.gate.decide(features, pixels, thumbs, scene)
    per_model = {id(router.feature): base}
    out = []
    for i, decision in enumerate(decisions):
        target = router.target(decision)
        if isinstance(target, Prediction):
            out.append(target)
            continue
        if id(target) not in per_model:
            per_model[id(target)] = outputs(router, target, sources, cache, tag)
        arrays = per_model[id(target)]
        ood = (
            target.ood.check(
                arrays["features"][i : i + 1].astype(np.float32), arrays["pixels"][i : i + 1]
            )
            if target.ood
            else None
        )
        result = target.result(
            arrays["probs"][i],
            3,
            ood_score=None if ood is None else float(ood[0][0]),
            not_skin_reason="" if ood is None else ood[2][0],
        )
        out.append(router.answered(result, decision, target))
    return out


def summary(results: list[Prediction]) -> dict:
    n = len(results)
    kinds, statuses, models, definite_by = {}, {}, {}, {}
    for r in results:
        kinds[r.scope.kind] = kinds.get(r.scope.kind, 0) + 1
        statuses[r.status] = statuses.get(r.status, 0) + 1
        key = r.scope.model or "none"
        models[key] = models.get(key, 0) + 1
        if r.triage in DEFINITE:  # which model gave the definite triages
            definite_by[key] = definite_by.get(key, 0) + 1
    definite = sum(definite_by.values())
    away = sum(r.status in ("out_of_scope", "not_skin") for r in results)
    return {
        "images": n,
        "definite_triage": definite / n,
        "turned_away": away / n,
        "kinds": kinds,
        "statuses": statuses,
        "answered_by": models,
        "definite_triage_by": definite_by,
    }


def default_with_gate(router: Router, sources, results, cache: Path) -> dict:
    """The default model's HAM10000 test numbers (image only) on every image and on those
    the gate lets it answer: coverage and balanced accuracy (mean recall)."""
    ham = load_split(load_dataset(HAM), HAM_SPLIT)
    labels = dict(zip(ham["path"].map(lambda p: Path(p).name), ham["label"]))
    base = outputs(router, router.feature, sources, cache, "ham")
    classes = router.feature.bundle.classes
    y = np.array([classes.index(labels[Path(p).name]) for p in sources])
    pred = router.feature.decide(base["probs"])
    kept = np.array([r.scope.model == router.feature.bundle.name for r in results])

    def balanced(mask):
        return float(np.mean([(pred[mask & (y == c)] == c).mean() for c in np.unique(y[mask])]))

    return {
        "coverage_without_gate": 1.0,
        "coverage_with_gate": float(kept.mean()),
        "balanced_accuracy_all": balanced(np.ones(len(y), bool)),
        "balanced_accuracy_answered": balanced(kept),
    }


def image_sets() -> dict[str, list]:
    ham = load_split(load_dataset(HAM), HAM_SPLIT)
    pad = pad_split()
    lesions = set((DERMNET / "lesion_conditions.txt").read_text().split("\n")) - {""}
    dermnet = sorted(p for p in (DERMNET / "images").rglob("*") if p.suffix.lower() == ".jpg")
    sys.path.insert(0, str(Path(__file__).parent))
    from ood_images import held_out_images  # benchmarks/ood_images.py

    return {
        "ham10000 test": [Path(p) for p in ham.loc[ham["split"] == "test", "path"]],
        "pad-ufes-20 test": [Path(p) for p in pad.loc[pad["split"] == "test", "path"]],
        "dermnet lesion folders": [p for p in dermnet if p.parent.name in lesions],
        "dermnet other folders": [p for p in dermnet if p.parent.name not in lesions],
        "probes": list(probe_images().values()),
        "held-out images": list(held_out_images().values()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("runs/gate-cache"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--gate", type=Path, help="gate folder (default: the bundled gate)")
    p.add_argument("--clinical", type=Path, help="clinical bundle (default: bundled/clinical)")
    args = p.parse_args(argv)
    from dermalens.runtime.scope import load_gate

    gate = load_gate(args.gate)
    options = {"backend": "onnx", "threads": 1, "precision": "fp32"}
    router = Router.installed(gate=gate, **options)
    if args.clinical:
        router.routes["clinical"] = Predictor(args.clinical, **options)
    tags = {"ham10000 test": "ham", "pad-ufes-20 test": "pad", "dermnet lesion folders": "dermnet"}
    tags["dermnet other folders"] = "dermnet"
    report = {"gate": gate.info.get("gate_sha256", "")[:12], "routes": {}, "sets": {}}
    report["routes"] = {k: v.bundle.version for k, v in router.routes.items()}
    for name, sources in image_sets().items():
        results = answers(router, sources, args.cache, tags.get(name, name))
        report["sets"][name] = summary(results)
        if name == "ham10000 test":
            report["default_model_ham_test"] = default_with_gate(
                router, sources, results, args.cache
            )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"scope-{report['gate']}.json"
    path.write_text(json.dumps(report, indent=2))
    print("| set | images | definite triage | turned away | kinds | answered by |")
    print("|---|---|---|---|---|---|")
    for name, s in report["sets"].items():
        print(
            f"| {name} | {s['images']} | {s['definite_triage']:.1%} | {s['turned_away']:.1%} "
            f"| {s['kinds']} | {s['answered_by']} |"
        )
    print(f"default model on the HAM10000 test part: {report['default_model_ham_test']}")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
