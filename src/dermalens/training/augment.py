"""Random training augmentation for dermoscopy. It runs *before* the deterministic
`preprocess.to_input`, so evaluation is exactly the training pipeline minus this module."""

from __future__ import annotations

import random

from PIL import Image, ImageEnhance

from dermalens.config import ConfigError, TrainConfig
from dermalens.evaluation.corruptions import FAMILIES, SEVERITIES, apply
from dermalens.preprocess import INTERPOLATION, Preprocessing


class Augment:
    """Flips, 90-degree turns, random scale/crop and mild colour jitter on a PIL image; with
    `corrupt_prob` > 0, first one acquisition corruption (`evaluation.corruptions`) drawn
    from `corrupt_families` at a random severity up to `corrupt_max_severity`.

    Dermoscopic images have no canonical orientation, so all flips and turns are label-safe.
    """

    def __init__(
        self,
        pre: Preprocessing,
        scale: tuple[float, float] = (0.75, 1.0),
        jitter: float = 0.1,
        seed: int | None = None,
        corrupt_prob: float = 0.0,
        corrupt_families: tuple[str, ...] = (),
        corrupt_max_severity: int = 3,
    ):
        self.pre = pre
        self.scale = scale
        self.jitter = jitter
        self.rng = random.Random(seed)
        self.corrupt_prob = corrupt_prob
        unknown = [f for f in corrupt_families if f not in FAMILIES]
        if unknown:
            raise ConfigError(
                f"corrupt_families: unknown family {unknown[0]!r}; choose from {sorted(FAMILIES)}"
            )
        if corrupt_max_severity not in SEVERITIES:
            raise ConfigError(
                f"corrupt_max_severity={corrupt_max_severity}: must be one of {SEVERITIES}"
            )
        if not 0.0 <= corrupt_prob <= 1.0:
            raise ConfigError(f"corrupt_prob={corrupt_prob}: must lie between 0 and 1")
        self.corruptions = [name for f in corrupt_families for name in FAMILIES[f]]
        self.max_severity = corrupt_max_severity

    @classmethod
    def for_config(cls, pre: Preprocessing, cfg: TrainConfig) -> Augment:
        return cls(
            pre,
            cfg.scale,
            cfg.color_jitter,
            cfg.seed,
            cfg.corrupt_prob,
            cfg.corrupt_families,
            cfg.corrupt_max_severity,
        )

    def __call__(self, image: Image.Image) -> Image.Image:
        rng = self.rng
        if self.corruptions and rng.random() < self.corrupt_prob:
            name = rng.choice(self.corruptions)
            severity = rng.randint(1, self.max_severity)
            image = apply(image.convert("RGB"), name, severity, seed=rng.randrange(2**31))
        if rng.random() < 0.25:
            image = image.transpose(Image.ROTATE_90)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_TOP_BOTTOM)
        image = self._crop(image)
        if self.jitter > 0:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                image = enhance(image).enhance(1 + rng.uniform(-self.jitter, self.jitter))
        return image

    def _crop(self, image: Image.Image) -> Image.Image:
        """Random crop of the target aspect ratio covering `scale` of the largest such crop."""
        aspect = self.pre.width / self.pre.height
        w, h = image.size
        full_w = min(w, h * aspect)
        frac = self.rng.uniform(*self.scale) ** 0.5
        cw, ch = full_w * frac, full_w * frac / aspect
        left = self.rng.uniform(0, w - cw)
        top = self.rng.uniform(0, h - ch)
        box = (left, top, left + cw, top + ch)
        size = (self.pre.width, self.pre.height)
        return image.resize(size, INTERPOLATION[self.pre.interpolation], box=box)
