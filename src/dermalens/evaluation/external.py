"""What a clinic needs to decide whether to trust a model on its own images.

    dermalens evaluate BUNDLE FOLDER          # any layout the loaders read, no split needed

`external_report` (stored as `metrics["external"]` by `evaluation.evaluate`) puts together,
at the bundle's shipped operating point: the headline metrics, triage as the Predictor
gives it (a malignant lesion turned away as "not skin" gets no triage answer, so it counts
as missed; the share answered "uncertain", which refers the patient anyway, beside it), the
share turned away, the shift warning's share and batch test, and the same numbers from the
bundle's own test record (`bundle.json` metrics["test"]) with the differences.
A set of one class (e.g. melanomas only) measures sensitivity and the turned-away share;
AUC and specificity need malignant and benign images, and the report says so.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

HEADLINE = ("accuracy", "balanced_accuracy", "macro_auc", "ece")


def _share(mask: np.ndarray, of: np.ndarray) -> float | None:
    return float(mask[of].mean()) if of.any() else None


def triage_at_shipped_point(
    p_malignant: np.ndarray,
    is_malignant: np.ndarray,
    uncertain: np.ndarray,
    not_skin: np.ndarray,
    threshold: float,
) -> dict:
    """Triage as `Predictor.result` gives it, counted per lesion kind.

    sensitivity: malignant images flagged and not turned away; specificity: benign images
    not flagged and not turned away; deferred: answered "uncertain" (not turned away);
    flagged_or_deferred: malignant images a clinician sees either way."""
    mal, ben = np.asarray(is_malignant, bool), ~np.asarray(is_malignant, bool)
    away, unsure = np.asarray(not_skin, bool), np.asarray(uncertain, bool) & ~not_skin
    flagged = (np.asarray(p_malignant) >= threshold) & ~away
    both = mal.any() and ben.any()
    return {
        "threshold": float(threshold),
        "sensitivity": _share(flagged, mal),
        "specificity": _share(~flagged & ~away, ben),
        "malignant_deferred": _share(unsure, mal),
        "malignant_flagged_or_deferred": _share(flagged | unsure, mal),
        "malignant_turned_away": _share(away, mal),
        "benign_turned_away": _share(away, ben),
        "malignant_auc": float(roc_auc_score(mal, p_malignant)) if both else None,
        "n_malignant": int(mal.sum()),
        "n_benign": int(ben.sum()),
    }


def _recorded(test: dict) -> dict:
    """The bundle's own test numbers, in this report's keys."""
    triage = (test.get("decision") or {}).get("triage") or {}
    ood = test.get("ood") or {}
    return {
        **{k: test.get(k) for k in HEADLINE},
        "sensitivity": triage.get("sensitivity"),
        "specificity": triage.get("specificity"),
        "turned_away": ood.get("rejected"),
    }


def compare(here: dict, test: dict | None) -> dict:
    """Each number here beside the bundle's test record, and here minus there."""
    if not test:
        return {}
    out = {}
    for key, there in _recorded(test).items():
        value = here.get(key)
        if value is None and there is None:
            continue
        diff = value - there if value is not None and there is not None else None
        out[key] = {"here": value, "bundle_test": there, "difference": diff}
    return out


def _notes(counts: dict, triage: dict, shift: dict | None) -> list[str]:
    notes = []
    if len(counts) == 1:
        (only,) = counts
        notes.append(
            f"every image here is {only}: balanced accuracy is its recall, and macro AUC, "
            f"malignant AUC and specificity are not given (they need other classes, and "
            f"malignant and benign images)"
        )
    if len(counts) > 1 and triage["n_malignant"] and not triage["n_benign"]:
        notes.append("no benign images: specificity cannot be measured here")
    if triage["n_benign"] and not triage["n_malignant"]:
        notes.append("no malignant images: sensitivity cannot be measured here")
    if shift is None:
        notes.append("the bundle has no shift warning (`dermalens calibrate --shift-only`)")
    elif shift["batch"]["shifted"]:
        notes.append(
            f"the shift warning flags these images as a set: {shift['batch']['message']}; "
            f"the bundle's own test numbers may not carry over to them"
        )
    return notes


def external_report(
    metrics: dict,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    malignant: list[bool | None],
    uncertain: np.ndarray,
    not_skin: np.ndarray,
    threshold: float,
    shift: dict | None,
    recorded_test: dict | None,
) -> dict:
    """The clinic's view of one evaluation (see the module docstring). `metrics`: the
    classification metrics of the same images; `shift`: {"flagged_share", "batch"} or None."""
    counts = {classes[i]: int(n) for i, n in enumerate(np.bincount(labels, minlength=len(classes)))}
    counts = {c: n for c, n in counts.items() if n}
    one_class = len(counts) == 1
    here = {k: metrics.get(k) for k in HEADLINE}
    if one_class:
        here["macro_auc"] = None
    out: dict = {"n": int(len(labels)), "classes_present": counts, "one_class": one_class}
    if any(flag is None for flag in malignant):
        out["triage"] = {"skipped": "the model has classes of unknown malignancy: no triage"}
    else:
        mask = np.array([bool(f) for f in malignant])
        out["triage"] = triage_at_shipped_point(
            probs[:, mask].sum(axis=1), mask[labels], uncertain, not_skin, threshold
        )
        here |= {k: out["triage"][k] for k in ("sensitivity", "specificity", "malignant_auc")}
    here["turned_away"] = float(np.mean(not_skin)) if len(not_skin) else None
    here["uncertain"] = float(np.mean(uncertain & ~not_skin)) if len(not_skin) else None
    out["headline"] = here
    out["shift"] = shift
    out["compared_with_bundle_test"] = compare(here, recorded_test)
    triage = out["triage"] if "skipped" not in out["triage"] else {"n_malignant": 0, "n_benign": 0}
    out["notes"] = _notes(counts, triage, shift)
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report_lines(report: dict) -> list[str]:
    """The report as lines for the terminal."""
    head, triage = report["headline"], report["triage"]
    lines = [f"{report['n']} images: {report['classes_present']}"]
    if "skipped" in triage:
        lines.append(f"triage: {triage['skipped']}")
    else:
        lines.append(
            f"triage at the shipped point (P(malignant) >= {triage['threshold']:.3f}): "
            f"sensitivity {_fmt(triage['sensitivity'])} (turned away counts as missed; "
            f"deferred as uncertain {_fmt(triage['malignant_deferred'])}, flagged or deferred "
            f"{_fmt(triage['malignant_flagged_or_deferred'])}), specificity "
            f"{_fmt(triage['specificity'])}, malignant AUC {_fmt(triage['malignant_auc'])}"
        )
    lines.append(
        f"turned away as not skin {_fmt(head['turned_away'])}, uncertain "
        f"{_fmt(head['uncertain'])}, ECE {_fmt(head['ece'])}"
    )
    if report["shift"] is not None:
        batch = report["shift"]["batch"]
        verdict = "differ as a set" if batch["shifted"] else "not flagged as a set"
        lines.append(
            f"shift warning: {report['shift']['flagged_share']:.1%} of images flagged "
            f"({batch['expected_share']:.1%} on validation); {verdict} (p = {batch['p_value']:.1e})"
        )
    compared = report["compared_with_bundle_test"]
    if compared:
        lines.append("here / the bundle's own test record / difference:")
        for key, row in compared.items():
            lines.append(
                f"  {key:>18}  {_fmt(row['here'])} / {_fmt(row['bundle_test'])} / "
                f"{_fmt(row['difference'])}"
            )
    lines += [f"note: {n}" for n in report["notes"]]
    return lines
