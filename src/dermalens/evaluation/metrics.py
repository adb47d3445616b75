"""Classification metrics from labels and probabilities: NumPy and scikit-learn only."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, bins: int = 15
) -> tuple[float, list[dict]]:
    """Top-label ECE with equal-width confidence bins; also returns the bins for plotting."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if not mask.any():
            continue
        acc, mean_conf = correct[mask].mean(), conf[mask].mean()
        ece += mask.mean() * abs(acc - mean_conf)
        table.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(mask.sum()),
                "accuracy": float(acc),
                "confidence": float(mean_conf),
            }
        )
    return float(ece), table


def ovr_auc(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class; None where a class is absent or alone."""
    out: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        positive = labels == i
        out[name] = (
            float(roc_auc_score(positive, probs[:, i]))
            if 0 < positive.sum() < len(labels)
            else None
        )
    return out


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: list[str], preds: np.ndarray | None = None
) -> dict:
    """Everything `evaluate` reports, as a JSON-ready dict.

    `preds` are the answers (default: the most probable class). Accuracy, balanced
    accuracy, F1 and the confusion matrix score the answers; AUC, NLL and ECE (top-label,
    the usual definition) score the probabilities.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    preds = probs.argmax(axis=1) if preds is None else np.asarray(preds, dtype=int)
    idx = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=idx, zero_division=0
    )
    aucs = ovr_auc(labels, probs, classes)
    valid_aucs = [a for a in aucs.values() if a is not None]
    present = sorted(set(labels.tolist()))
    ece, bins = expected_calibration_error(labels, probs)
    nll = float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, preds)),
        # mean recall over the classes present in `labels` (the ISIC challenge metric)
        "balanced_accuracy": float(balanced_accuracy_score(labels, preds)) if present else 0.0,
        "macro_f1": float(
            f1_score(labels, preds, labels=present, average="macro", zero_division=0)
        ),
        "macro_auc": float(np.mean(valid_aucs)) if valid_aucs else None,
        "ece": ece,
        "nll": nll,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "auc": aucs[name],
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(labels, preds, labels=idx).tolist(),
        "calibration_bins": bins,
        "classes": list(classes),
    }


def summary(metrics: dict) -> str:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece")
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))


PAIRED_KEYS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "ece")


def _ovr_auc_fast(positive: np.ndarray, scores: np.ndarray) -> float:
    """One-vs-rest ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    ranks = rankdata(scores)
    n_pos = positive.sum()
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _headline(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The five headline metrics as one vector (PAIRED_KEYS order), in NumPy for speed.

    The same definitions as `classification_metrics` (checked by the tests): balanced
    accuracy and macro F1 over the classes present in `labels`, AUC one-vs-rest averaged
    over the classes with both positives and negatives (NaN if none), top-label ECE.
    """
    k = probs.shape[1]
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    support, predicted, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    present = support > 0
    recall = hits[present] / support[present]
    denominator = support[present] + predicted[present]
    f1 = np.divide(
        2 * hits[present], denominator, out=np.zeros(present.sum()), where=denominator > 0
    )
    aucs = [
        _ovr_auc_fast(labels == i, probs[:, i]) for i in range(k) if 0 < support[i] < len(labels)
    ]
    return np.array(
        [
            hits.sum() / len(labels),
            recall.mean(),
            f1.mean(),
            np.mean(aucs) if aucs else np.nan,
            expected_calibration_error(labels, probs)[0],
        ]
    )


def paired_bootstrap(
    labels: np.ndarray,
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    groups: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Difference B - A of the headline metrics on the same images, with a paired bootstrap.

    `a` and `b` are (probabilities N x C, answers N) of two models on the same N images with
    the same `labels`. Each resample draws whole `groups` (lesions or patients: images of
    one lesion are not independent) with replacement and scores both models on the same
    draw, so the interval is for the difference, not for either model. Returns, per metric:
    a, b, diff (on all images), lo / hi (2.5% / 97.5% quantiles of the resampled
    differences) and p_b_better (share of resamples where B is better; lower is better
    for ECE).
    """
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    if n == 0:
        raise ValueError("paired_bootstrap: no images to compare")
    for name, (probs, preds) in (("a", a), ("b", b)):
        if len(probs) != n or len(preds) != n:
            raise ValueError(
                f"paired_bootstrap: model {name} has {len(probs)} probability rows and "
                f"{len(preds)} answers for {n} labels"
            )
    if resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be >= 1, got {resamples}")
    groups = np.arange(n) if groups is None else np.asarray(groups)
    _, group_index = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(group_index == g) for g in range(group_index.max() + 1)]
    rng = np.random.default_rng(seed)
    base_a, base_b = _headline(labels, *a), _headline(labels, *b)
    diffs = np.empty((resamples, len(PAIRED_KEYS)))
    for r in range(resamples):
        pick = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in pick])
        y = labels[idx]
        diffs[r] = _headline(y, b[0][idx], b[1][idx]) - _headline(y, a[0][idx], a[1][idx])
    out = {}
    for k, key in enumerate(PAIRED_KEYS):
        d = diffs[:, k][~np.isnan(diffs[:, k])]
        better = d < 0 if key == "ece" else d > 0
        out[key] = {
            "a": float(base_a[k]),
            "b": float(base_b[k]),
            "diff": float(base_b[k] - base_a[k]),
            "lo": float(np.quantile(d, 0.025)) if len(d) else float("nan"),
            "hi": float(np.quantile(d, 0.975)) if len(d) else float("nan"),
            "p_b_better": float(better.mean()) if len(d) else float("nan"),
        }
    return out
