"""Photos of skin that are not a lesion close-up, made from licensed lesion photos.

    images = synthetic_other_skin(pad_training_paths, per_kind=30)  # name -> RGB array

The scope gate (`evaluation.scope_fit`) has no licensed photos of rashes, nails or hair;
these stand-ins (mosaics of many lesions, a lesion far away on a wide field of skin,
lesion-free skin, drawn rashes and hair) are scored in its report, never fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dermalens.imageio import load_image


def synthetic_other_skin(paths: Sequence[Path], per_kind: int = 30, seed: int = 0):
    """Photos of skin that are not a lesion close-up, made from lesion photos: name -> RGB."""
    rng = np.random.default_rng(seed)
    images = [load_image(p).convert("RGB").resize((300, 300)) for p in paths]
    out = {}
    for i in range(per_kind):
        pick = [images[j] for j in rng.choice(len(images), 16, replace=False)]
        mosaic = Image.new("RGB", (300, 300))
        for j, im in enumerate(pick):
            mosaic.paste(im.resize((75, 75)), (75 * (j % 4), 75 * (j // 4)))
        out[f"mosaic {i}"] = mosaic
        base = pick[0]
        skin = base.crop((0, 0, 60, 60)).resize((300, 300)).filter(ImageFilter.GaussianBlur(6))
        out[f"skin patch {i}"] = skin
        far = skin.copy()
        far.paste(pick[1].resize((50, 50)), tuple(int(v) for v in rng.integers(20, 230, 2)))
        out[f"lesion far away {i}"] = far
        rash, hair = skin.copy(), skin.copy()
        draw = ImageDraw.Draw(rash)
        for _ in range(int(rng.integers(30, 90))):
            x, y, r = (*rng.integers(0, 300, 2), int(rng.integers(3, 14)))
            red = tuple(int(v) for v in (rng.integers(150, 230), rng.integers(40, 110), 70))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=red)
        out[f"drawn rash {i}"] = rash.filter(ImageFilter.GaussianBlur(1.5))
        draw = ImageDraw.Draw(hair)
        for _ in range(120):
            x, y = rng.integers(0, 300, 2)
            dx, dy = rng.integers(-60, 60, 2)
            draw.line((x, y, x + dx, y + dy), fill=(40, 28, 20), width=2)
        out[f"hair {i}"] = hair
    return {name: np.asarray(im) for name, im in out.items()}
