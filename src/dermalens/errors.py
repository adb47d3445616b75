"""Errors that mean "bad input or setting", shown to CLI users as one sentence, no traceback."""

from __future__ import annotations

from dermalens.bundle import BundleError
from dermalens.config import ConfigError
from dermalens.data.records import DataError
from dermalens.imageio import ImageError


class WeightsError(RuntimeError):
    """Pretrained weights were asked for and cannot be had."""


class VariantRejected(ValueError):
    """A precision variant missed its agreement bar; its numbers are recorded in the bundle."""


USER_ERRORS = (
    BundleError,
    ConfigError,
    DataError,
    ImageError,
    WeightsError,
    VariantRejected,
    FileNotFoundError,
    FloatingPointError,
)
