"""PNG figures: training curves, confusion matrices, reliability diagrams."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def plot_curves(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    left.plot(epochs, [h["val_nll"] for h in history], label="val NLL")
    left.set_xlabel("epoch")
    left.legend()
    for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_auc"):
        right.plot(epochs, [h[key] for h in history], label=key.removeprefix("val_"))
    right.set_xlabel("epoch")
    right.set_ylim(0, 1)
    right.legend()
    right.set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    counts = np.asarray(matrix, dtype=float)
    rows = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, data, title, fmt in (
        (axes[0], counts, "counts", "{:.0f}"),
        (axes[1], rows, "row-normalised (recall)", "{:.2f}"),
    ):
        ax.imshow(data, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        top = data.max() or 1
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(
                    j,
                    i,
                    fmt.format(data[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if data[i, j] > top / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(bins: list[dict], ece: float, path: Path, title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    if bins:
        centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
        width = bins[0]["hi"] - bins[0]["lo"]
        ax.bar(
            centers, [b["accuracy"] for b in bins], width=width * 0.9, alpha=0.7, label="accuracy"
        )
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o-",
            color="C1",
            label="bins",
        )
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} ECE = {ece:.3f}".strip())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_risk_coverage(curve: dict[str, np.ndarray], chosen: dict, target: float, path: Path):

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(curve["coverage"], 1 - curve["selective_accuracy"], label="selective risk (error)")
    ax.axhline(1 - target, color="k", ls="--", lw=1, label=f"target risk {1 - target:.2f}")
    ax.plot(
        [chosen["coverage"]],
        [1 - chosen["selective_accuracy"]],
        "o",
        color="C3",
        label=f"chosen: answer's p >= {chosen['uncertain_below']:.2f}",
    )
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("error among answered images")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, None)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
