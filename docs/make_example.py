"""Draw docs/example.png: an image, its heatmap and the top classes from a bundle.

python docs/make_example.py [BUNDLE] [IMAGE]
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dermalens.bundle import default_model_path  # noqa: E402
from dermalens.imageio import load_image  # noqa: E402
from dermalens.runtime.explain import overlay  # noqa: E402
from dermalens.runtime.predictor import Predictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(bundle: str | Path, image_path: str | Path, out: Path) -> None:
    predictor = Predictor(bundle)
    result = predictor.predict(image_path, top_k=3, explain=True)
    image = load_image(image_path)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), gridspec_kw={"width_ratios": [4, 4, 4]})
    axes[0].imshow(image)
    axes[0].set_title(Path(image_path).name, fontsize=10)
    axes[1].imshow(overlay(image, result.heatmap))
    axes[1].set_title("Grad-CAM heatmap (top class)", fontsize=10)
    for ax in axes[:2]:
        ax.axis("off")
    names = [textwrap.fill(f"{c.name} ({c.code})", 24) for c in result.top][::-1]
    probs = [c.probability for c in result.top][::-1]
    colours = ["#c0392b" if c.malignant else "#2e86c1" for c in result.top][::-1]
    axes[2].barh(names, probs, color=colours)
    axes[2].set_xlim(0, 1)
    axes[2].set_title(
        f"triage: {result.triage}\nP(malignant classes) = {result.malignant_probability:.0%}",
        fontsize=10,
    )
    for i, p in enumerate(probs):
        axes[2].text(min(p + 0.02, 0.85), i, f"{p:.0%}", va="center", fontsize=9)
    axes[2].tick_params(axis="y", labelsize=8)
    fig.suptitle(
        f"dermalens {predictor.bundle.version} - decision support, not a diagnosis", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    bundle = sys.argv[1] if len(sys.argv) > 1 else default_model_path()
    image = sys.argv[2] if len(sys.argv) > 2 else ROOT / "tests/fixtures/ham/ISIC_0024310.jpg"
    main(bundle, image, ROOT / "docs" / "example.png")
