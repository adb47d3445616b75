"""dermalens: skin-lesion classification for clinical decision support (never a diagnosis).

    from dermalens import Predictor
    result = Predictor("src/dermalens/bundled/default").predict("lesion.jpg", explain=True)
    print(result.top[0].name, result.top[0].probability, result.triage)

The names below are the public face; each loads its module on first use, so
`import dermalens` stays light and needs no PyTorch (`train` and `export_onnx` do).
See ARCHITECTURE.md for the layout behind them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    # prediction
    "Predictor": "dermalens.runtime.predictor",
    "Prediction": "dermalens.runtime.predictor",
    "predict_folder": "dermalens.runtime.folder",
    "DISCLAIMER": "dermalens.runtime.predictor",
    # bundles
    "Bundle": "dermalens.bundle",
    "load_bundle": "dermalens.bundle",
    "default_model_path": "dermalens.bundle",
    "build_ensemble": "dermalens.runtime.ensemble",
    # data
    "load_dataset": "dermalens.data.loaders",
    "check_dataset": "dermalens.data.check",
    "grouped_split": "dermalens.data.splits",
    "load_split": "dermalens.data.splits",
    # training (PyTorch)
    "TrainConfig": "dermalens.config",
    "make_config": "dermalens.config",
    "train": "dermalens.training.train",
    "build_soup": "dermalens.training.soup",
    # evaluation and calibration
    "evaluate": "dermalens.evaluation.evaluate",
    "EvalResult": "dermalens.evaluation.evaluate",
    "calibrate_bundle": "dermalens.evaluation.calibrate",
    "classification_metrics": "dermalens.evaluation.metrics",
    # export (PyTorch for export_onnx)
    "export_onnx": "dermalens.export.to_onnx",
    "export_variants": "dermalens.export.variants",
    # errors a caller may catch
    "BundleError": "dermalens.bundle",
    "ConfigError": "dermalens.config",
    "DataError": "dermalens.data.records",
    "ImageError": "dermalens.imageio",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'dermalens' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
