"""Training settings: one dataclass of defaults, a config file, `key=value` overrides.

Layering, right-most wins: defaults -> config file (JSON or YAML) -> CLI `key=value` ->
keyword arguments. Unknown keys are rejected with close-match suggestions; values are
parsed with `ast.literal_eval`, never `eval`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting that does not exist or has the wrong type."""


@dataclass
class TrainConfig:
    # data
    data: str = "../shared/data/ham10000"  # dataset folder (HAM10000, ISIC 2019 or image folders)
    classes: tuple[str, ...] = ()  # class subset; empty = every class in the data
    split_seed: int = 0  # seed of the lesion-grouped train/val/test split
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_file: str = ""  # reuse a saved split CSV instead of drawing one
    exclude_problems: bool = True  # drop unreadable images and exact duplicates found by check
    limit: int = 0  # use at most this many images per split (smoke tests); 0 = all
    # model
    model: str = "tf_efficientnet_lite0"  # any timm name, or "plain_cnn" for the baseline
    pretrained: str = "auto"  # auto | none | a local checkpoint path
    height: int = 150  # model input height in pixels
    width: int = 200  # model input width in pixels
    drop_rate: float = 0.2  # dropout before the classifier
    # backbone stages trained, counted from the top (with its final conv); -1 = all, 0 = the
    # head (and metadata layer) only. Frozen layers cost a forward pass only: on a CPU a
    # small data set (PAD-UFES-20) trains several times faster with 2 than with all
    train_stages: int = -1
    use_metadata: bool = True  # fuse age, sex and body site with the image features
    # the fused fields: age, sex, site, then any of patient.CLINICAL (PAD-UFES-20's)
    metadata_fields: tuple[str, ...] = ("age", "sex", "site")
    meta_dropout: float = 0.2  # each field is fed as missing with this probability
    meta_drop_all: float = 0.0  # this share of training images gets every field missing
    color_constancy: str = "none"  # none | shades_of_gray; stored in the bundle's preprocessing
    # optimisation
    epochs: int = 15
    batch_size: int = 32  # per process: under torchrun the run's batch is this x processes
    lr: float = 1e-3  # peak AdamW learning rate, as given whatever the number of processes
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0  # linear warm-up before the schedule
    schedule: str = "cosine"  # cosine | onecycle | constant
    label_smoothing: float = 0.0  # 0.1 measured worse on calibration over 3 split seeds
    balance: str = "loss"  # loss (inverse-frequency weights) | sampler | none
    balance_power: float = 0.75  # weights = (1 / frequency) ** power; 1 = fully balanced
    ema: float = 0.998  # per-step decay of an average of the weights (e.g. 0.998); 0 = off.
    # With it on, validation, best.pt's choice and the bundle use the averaged weights.
    patience: int = 4  # early stopping: epochs without val balanced-accuracy gain
    snapshots: bool = False  # also keep each epoch's weights (EMA if on) in snapshots/eNN.pt
    calibrate: bool = True  # fit temperature, thresholds and the OOD check on val at the end
    # augmentation
    augment: bool = True  # flips, 90-degree turns, scale/crop, colour jitter
    scale: tuple[float, float] = (0.75, 1.0)  # random-resized-crop area range
    color_jitter: float = 0.1
    # acquisition-shift augmentation: this share of training images gets one corruption of
    # `evaluation.corruptions` from these families at severity 1..corrupt_max_severity; the
    # families left out stay unseen, for testing robustness (benchmarks/robustness.py)
    corrupt_prob: float = 0.0
    corrupt_families: tuple[str, ...] = ("photometric", "blur", "digital")
    corrupt_max_severity: int = 3
    mix: str = "none"  # none | mixup | cutmix: blend pairs of training images and their labels
    mix_alpha: float = 0.4  # Beta(alpha, alpha) draws the blend weight
    mix_prob: float = 0.5  # share of training batches that are blended
    # runtime
    seed: int = 0
    workers: int = 2  # data-loader processes
    threads: int = 0  # torch intra-op threads; 0 = all cores
    device: str = "auto"  # auto (CUDA, else Apple MPS, else CPU) | cpu | cuda | mps
    amp: str = "bf16"  # mixed precision on CUDA: bf16 | fp16 (with loss scaling) | none
    bf16: bool = False  # bfloat16 autocast on CPU (AMX)
    channels_last: bool = True
    out: str = "runs"  # parent folder of run folders
    name: str = ""  # run folder name; default: model name and time
    resume: str = ""  # a run folder or last.pt to continue from
    progress: bool = True  # tqdm progress bars

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES = {
    "schedule": ("cosine", "onecycle", "constant"),
    "balance": ("loss", "sampler", "none"),
    "color_constancy": ("none", "shades_of_gray"),
    "mix": ("none", "mixup", "cutmix"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "amp": ("bf16", "fp16", "none"),
}

# A run's config.json also records how it ran (processes, effective batch, device): a
# record, not a setting, so a config file copied from a run folder ignores it.
LAUNCH = "launch"


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert `value` to the type of the field's default, or raise naming the key."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if kind is bool and value.lower() in ("true", "false", "yes", "no"):
                value = value.lower() in ("true", "yes")
            else:
                raise ConfigError(
                    f"{key}={value!r}: expected {kind.__name__}, e.g. {key}={default!r}"
                ) from None
    if kind is tuple and isinstance(value, list | tuple | str):
        value = (value,) if isinstance(value, str) else tuple(value)
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r}: expected {kind.__name__}, e.g. {key}={default!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{key}={value!r}: must be one of {CHOICES[key]}")
    return value


def _check_key(key: str, valid: list[str]) -> None:
    if key not in valid:
        close = difflib.get_close_matches(key, valid, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown setting {key!r}{hint} Valid settings: {', '.join(valid)}")


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['lr=0.001', 'epochs=3'] -> {'lr': '0.001', 'epochs': '3'}."""
    out = {}
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        out[key.strip()] = value
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # optional dependency, only for YAML files

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    data.pop(LAUNCH, None)
    return data


def make_config(
    file: str | Path | None = None, overrides: list[str] | None = None, **kwargs: Any
) -> TrainConfig:
    """Defaults -> file -> `key=value` overrides -> keyword arguments."""
    base = TrainConfig()
    valid = [f.name for f in dataclasses.fields(TrainConfig)]
    layers: list[dict[str, Any]] = []
    if file:
        layers.append(read_config_file(file))
    layers.append(parse_overrides(overrides or []))
    layers.append(kwargs)
    values = base.to_dict()
    for layer in layers:
        for key, value in layer.items():
            _check_key(key, valid)
            values[key] = _coerce(key, value, getattr(base, key))
    return TrainConfig(**values)


# Settings added after runs were already saved: a saved config without them ran without
# them, so it is rebuilt with the value that means "off" (for the device: the CPU those runs
# had), not today's default.
ADDED_LATER = {"ema": 0.0, "snapshots": False, "device": "cpu", "amp": "none"}


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved config (checkpoint, bundle); keys unknown to this version are dropped."""
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {**ADDED_LATER, **{k: v for k, v in data.items() if k in valid}}
    return make_config(**values)


__all__ = ["TrainConfig", "ConfigError", "make_config", "config_from_dict"]
