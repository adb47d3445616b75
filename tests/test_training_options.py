"""Colour constancy (a preprocessing option stored in the bundle) and Mixup / CutMix."""

import numpy as np
import pytest
import torch
from PIL import Image

from dermalens.cli import main
from dermalens.config import ConfigError, make_config
from dermalens.preprocess import Preprocessing, normalise, shades_of_gray, to_input
from dermalens.runtime.folder import normalise_into
from dermalens.training.mixing import mix_batch

SOG = Preprocessing(color_constancy="shades_of_gray")


def _tinted(path, gains=(1.0, 0.8, 0.6)) -> Image.Image:
    pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) * np.array(gains)
    return Image.fromarray(pixels.round().astype(np.uint8))


def test_shades_of_gray_removes_a_colour_cast(fixture_images):
    for path in fixture_images:
        plain = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        tinted = np.asarray(_tinted(path)).transpose(2, 0, 1)
        a, b = shades_of_gray(plain), shades_of_gray(tinted)
        # the same scene under two illuminants: equal colour balance after constancy
        ratio = a.reshape(3, -1).mean(1) / b.reshape(3, -1).mean(1)
        assert np.ptp(ratio / ratio.mean()) < 0.02, path.name
        before = plain.reshape(3, -1).mean(1) / tinted.reshape(3, -1).mean(1)
        assert np.ptp(before / before.mean()) > 0.3
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255


def test_shades_of_gray_keeps_a_grey_image_and_a_black_frame():
    grey = np.full((3, 10, 12), 128, np.uint8)
    assert np.array_equal(shades_of_gray(grey), grey.astype(np.float32))
    assert not shades_of_gray(np.zeros((3, 10, 12), np.uint8)).any()


def test_colour_constancy_runs_on_every_input_path(fixture_images):
    for path in fixture_images:
        image = Image.open(path).convert("RGB")
        out = np.empty((3, SOG.height, SOG.width), np.float32)
        normalise_into(image, SOG, out)
        assert np.array_equal(out, normalise(image, SOG))
        assert np.array_equal(out, to_input(path, SOG))
        assert not np.array_equal(out, normalise(image, Preprocessing()))


def test_colour_constancy_is_described_and_checked():
    assert Preprocessing.from_dict(SOG.to_dict()) == SOG
    assert Preprocessing.from_dict({}).color_constancy == "none"  # bundles from before
    with pytest.raises(ValueError, match="color_constancy 'white_patch'"):
        Preprocessing(color_constancy="white_patch")
    with pytest.raises(ConfigError, match="color_constancy"):
        make_config(overrides=["color_constancy=grey_world"])
    with pytest.raises(ConfigError, match="mix='blend'"):
        make_config(overrides=["mix=blend"])


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mix_batch_blends_images_metadata_and_the_label_weight(kind):
    rng = np.random.default_rng(0)
    x = torch.arange(8, dtype=torch.float32)[:, None, None, None].expand(8, 3, 10, 16).clone()
    meta = torch.eye(8)
    for _ in range(20):
        mixed, m, partner, lam = mix_batch(x, meta, kind, 0.4, rng)
        assert 0 <= lam <= 1 and mixed.shape == x.shape
        assert sorted(partner.tolist()) == list(range(8))
        torch.testing.assert_close(m, meta * lam + meta[partner] * (1 - lam))
        if kind == "mixup":
            torch.testing.assert_close(mixed, x * lam + x[partner] * (1 - lam))
        else:  # each image keeps exactly lam of its own pixels (where its partner differs)
            for i in torch.nonzero(partner != torch.arange(8)).flatten():
                own = (mixed[i] == x[i]).float().mean().item()
                assert own == pytest.approx(lam, abs=1e-6)
    assert torch.equal(x[:, 0, 0, 0], torch.arange(8, dtype=torch.float32))  # input untouched
    with pytest.raises(ValueError, match="mix_alpha"):
        mix_batch(x, meta, kind, 0.0, rng)


@pytest.mark.slow
def test_training_with_cutmix_and_colour_constancy_stores_the_preprocessing(
    tiny_ham, tmp_path, fixture_images, capsys
):
    from dermalens.bundle import load_bundle
    from dermalens.runtime.predictor import Predictor

    args = ["train", f"data={tiny_ham}", f"out={tmp_path}", "name=sog", "epochs=1"]
    args += ["batch_size=8", "height=64", "width=80", "workers=0", "progress=False"]
    args += ["mix=cutmix", "mix_prob=1.0", "color_constancy=shades_of_gray", "calibrate=False"]
    assert main(args) == 0
    bundle = load_bundle(tmp_path / "sog" / "bundle")
    assert bundle.preprocessing.color_constancy == "shades_of_gray"
    predictor = Predictor(bundle)
    expected = to_input(fixture_images[0], bundle.preprocessing)
    assert np.array_equal(predictor.prepare(fixture_images[0]), expected)
    capsys.readouterr()
    assert main(["train", f"data={tiny_ham}", f"out={tmp_path}", "mix=mixup", "mix_alpha=0"]) == 2
    assert "mix_alpha > 0 (got 0.0)" in capsys.readouterr().err


def test_corruption_augmentation_draws_only_the_named_families():
    from PIL import Image

    from dermalens.config import ConfigError, make_config
    from dermalens.evaluation.corruptions import FAMILIES
    from dermalens.preprocess import Preprocessing
    from dermalens.training.augment import Augment

    pre = Preprocessing(height=48, width=64)
    cfg = make_config(overrides=["corrupt_prob=1.0", "corrupt_families=('blur',)"])
    augment = Augment.for_config(pre, cfg)
    assert augment.corruptions == list(FAMILIES["blur"])
    image = Image.new("RGB", (64, 48), (180, 120, 100))
    assert augment(image).size == (64, 48)
    off = Augment.for_config(pre, make_config())
    assert off.corrupt_prob == 0.0
    with pytest.raises(ConfigError, match="unknown family 'nope'"):
        Augment.for_config(pre, make_config(overrides=["corrupt_families=('nope',)"]))
    with pytest.raises(ConfigError, match="corrupt_max_severity=9"):
        Augment.for_config(pre, make_config(overrides=["corrupt_max_severity=9"]))
