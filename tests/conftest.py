"""Shared fixtures: real fixture images, the HAM10000 folder, and a tiny model bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
HAM_FIXTURES = FIXTURES / "ham"
HAM_ROOT = ROOT.parent / "shared" / "data" / "ham10000"
DEFAULT_MODEL = ROOT / "src" / "dermalens" / "bundled" / "default"


@pytest.fixture(scope="session")
def fixture_images() -> list[Path]:
    """Seven real HAM10000 images, one per class (see fixtures/ham/ATTRIBUTION.md)."""
    return sorted(HAM_FIXTURES.glob("*.jpg"))


@pytest.fixture(scope="session")
def ham_root() -> Path:
    if not (HAM_ROOT / "metadata.csv").is_file():
        pytest.skip(f"HAM10000 data not found at {HAM_ROOT}")
    return HAM_ROOT


def make_tiny_bundle(
    target: Path, use_metadata: bool = False, onnx: bool = True, seed: int = 0
) -> Path:
    """A randomly initialised small CNN bundle (7 HAM classes, 64x80 input), ONNX-exported."""
    import torch

    from dermalens.config import make_config
    from dermalens.export.to_onnx import export_onnx
    from dermalens.networks import build_model
    from dermalens.preprocess import Preprocessing
    from dermalens.taxonomy import HAM10000_CLASSES
    from dermalens.training.package import bundle_from_model

    torch.manual_seed(seed)
    cfg = make_config(
        model="plain_cnn", height=64, width=80, name="tiny", use_metadata=use_metadata
    )
    model, source = build_model("plain_cnn", 7, "none", 0.0, use_metadata)
    with torch.no_grad():  # spread the random logits so probabilities are not all ~1/7
        model.head.weight.mul_(20)
    pre = Preprocessing(height=64, width=80)
    bundle_from_model(model.eval(), target, list(HAM10000_CLASSES), pre, cfg, source)
    if onnx:
        export_onnx(target, sorted(HAM_FIXTURES.glob("*.jpg")))
    return target


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


def train_tiny(data: Path, out: Path, *extra: str) -> int:
    """`dermalens train` of the small CNN on tiny data: seconds, no calibration."""
    from dermalens.cli import main

    args = [
        "train",
        f"data={data}",
        f"out={out}",
        "model=plain_cnn",
        "batch_size=8",
        "height=48",
        "width=64",
        "workers=0",
        "progress=False",
        "calibrate=False",
        "lr=0.01",
        *extra,
    ]
    return main(args)


def make_tiny_ham(root: Path, copies: int = 4) -> Path:
    """A HAM10000-format dataset from the fixture images: `copies` lesions per class, each
    a flipped / rotated / re-toned version of the class's fixture image."""
    import pandas as pd
    from PIL import Image, ImageEnhance

    (root / "images").mkdir(parents=True, exist_ok=True)
    meta = pd.read_csv(HAM_FIXTURES / "metadata.csv")
    rows = []
    for rec in meta.to_dict("records"):
        base = Image.open(HAM_FIXTURES / f"{rec['image_id']}.jpg").convert("RGB")
        for k in range(copies):
            image = base.rotate(180 * (k % 2)).transpose(Image.FLIP_LEFT_RIGHT) if k else base
            image = ImageEnhance.Brightness(image).enhance(1 + 0.05 * k)
            image_id = f"{rec['image_id']}_{k}"
            image.save(root / "images" / f"{image_id}.jpg", quality=92)
            rows.append({**rec, "image_id": image_id, "lesion_id": f"{rec['lesion_id']}_{k}"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_ham(tmp_path_factory) -> Path:
    return make_tiny_ham(tmp_path_factory.mktemp("data") / "tiny_ham")
