"""Classification metrics from labels and probabilities: NumPy and scikit-learn only."""

from __future__ import annotations

import numpy as np
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
