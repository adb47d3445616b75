"""Which non-skin images a bundle's OOD check calls "not skin".

    python benchmarks/ood_images.py src/dermalens/bundled/default runs/ens-ll ...

For each bundle: the 12 probe images that calibration sees when it picks the OOD thresholds
(`dermalens.evaluation.ood_fit.probe_images`), then 13 further scikit-image sample images
that it never sees (textures, microscopy, astronomy, a retina, a clock, a logo...), each run
through `Predictor.predict` as a user's upload would be. Also prints the bundle's recorded
validation and test false-reject rates on skin images (`metrics.ood`, `metrics.test.ood`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dermalens.bundle import load_bundle
from dermalens.evaluation.ood_fit import probe_images
from dermalens.runtime.predictor import Predictor

# scikit-image sample images that ship with the package (no download) and are not probes;
# `data.cat` is left out: it is the same picture as the probe `chelsea`
HELD_OUT = (
    "brick",
    "cell",
    "checkerboard",
    "clock",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "microaneurysms",
    "moon",
    "retina",
)


def held_out_images() -> dict[str, np.ndarray]:
    from skimage import data

    out = {}
    for name in HELD_OUT:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        out[name] = image
    return out


def rejected(predictor: Predictor, images: dict[str, np.ndarray]) -> tuple[int, list[str]]:
    missed = [name for name, image in images.items() if not predictor.predict(image).not_skin]
    return len(images) - len(missed), missed


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundle folders")
    paths = p.parse_args(argv).models
    probes, others = probe_images(), held_out_images()
    print("| bundle | probes rejected | held-out rejected | missed | val FR | test FR |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        bundle = load_bundle(path)
        predictor = Predictor(path)
        caught, missed = rejected(predictor, probes)
        caught_other, missed_other = rejected(predictor, others)
        ood = bundle.metrics.get("ood", {})
        val = ood.get("val_false_reject", {}).get("rejected")
        test = bundle.metrics.get("test", {}).get("ood", {}).get("rejected")
        print(
            f"| {path} | {caught}/{len(probes)} | {caught_other}/{len(others)} | "
            f"{', '.join(missed + missed_other) or '-'} | {rate(val)} | {rate(test)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
