"""From logits to calibrated probabilities and answers: `Calibration` (temperature, class
bias, decision bias, as `evaluation.calibrate` fits them) and test-time-augmentation views."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dermalens.bundle import Bundle


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def tta_views(batch: np.ndarray) -> np.ndarray:
    """N x C x H x W -> 4N: the batch, its horizontal and vertical flips, its 180-degree turn.

    View-major: rows [v * N : (v + 1) * N] are view v, view 0 the unchanged batch.
    """
    return np.concatenate([batch, batch[..., ::-1], batch[..., ::-1, :], batch[..., ::-1, ::-1]])


@dataclass
class Calibration:
    """From logits to what is shown and answered, as fitted by `evaluation.calibrate`.

    Probabilities: softmax(logits / temperature + class_bias), averaged over TTA views;
    calibrated to how often each class is right on validation. Answer: the class with the
    highest log(probability) + decision_bias. Probabilities follow the training data's
    class mix (most lesions are nevi), so their argmax rarely names a rare class; the
    decision bias (by default minus the class bias: the class-weighted model's own
    ranking) re-weights classes for balanced recall without changing the probabilities.
    """

    temperature: float
    class_bias: np.ndarray
    decision_bias: np.ndarray

    @classmethod
    def of(cls, bundle: Bundle) -> Calibration:
        k = len(bundle.classes)
        return cls(
            float(bundle.temperature),
            np.array(bundle.class_bias or [0.0] * k, np.float64),
            np.array(bundle.decision_bias or [0.0] * k, np.float64),
        )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Views x N x classes (or N x classes) logits -> N x classes probabilities."""
        views = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
        probs = softmax(views / self.temperature + self.class_bias)
        return probs.reshape((-1, *logits.shape[-2:])).mean(axis=0)

    def scores(self, probs: np.ndarray) -> np.ndarray:
        """log(probability) + decision_bias: the answer is the highest-scoring class."""
        return np.log(np.maximum(probs, 1e-300)) + self.decision_bias

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return self.scores(probs).argmax(axis=1)
