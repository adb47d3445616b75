"""Random training augmentation for dermoscopy. It runs *before* the deterministic
`preprocess.to_input`, so evaluation is exactly the training pipeline minus this module."""

from __future__ import annotations

import random

from PIL import Image, ImageEnhance

from dermalens.preprocess import INTERPOLATION, Preprocessing


class Augment:
    """Flips, 90-degree turns, random scale/crop and mild colour jitter on a PIL image.

    Dermoscopic images have no canonical orientation, so all flips and turns are label-safe.
    """

    def __init__(
        self,
        pre: Preprocessing,
        scale: tuple[float, float] = (0.75, 1.0),
        jitter: float = 0.1,
        seed: int | None = None,
    ):
        self.pre = pre
        self.scale = scale
        self.jitter = jitter
        self.rng = random.Random(seed)

    def __call__(self, image: Image.Image) -> Image.Image:
        rng = self.rng
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
