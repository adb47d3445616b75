"""The weight average (`ema=`): what is validated, kept and shipped are the averaged weights;
and a metadata model's test report with and without its metadata."""

import pytest
import torch

from conftest import train_tiny
from dermalens.bundle import load_bundle
from dermalens.cli import main

pytestmark = pytest.mark.slow


def test_bundle_holds_the_averaged_weights(tiny_ham, tmp_path):
    extra = ("name=ema", "epochs=2", "ema=0.9", "use_metadata=True")
    assert train_tiny(tiny_ham, tmp_path, *extra) == 0
    best = torch.load(tmp_path / "ema" / "best.pt", map_location="cpu", weights_only=False)
    assert best["ema_steps"] > 0
    live, ema = best["model"], best["ema"]
    assert live.keys() == ema.keys()
    moved = [k for k in live if live[k].is_floating_point() and not torch.equal(live[k], ema[k])]
    assert moved, "the average should differ from the live weights after some steps"
    shipped = torch.load(tmp_path / "ema" / "bundle" / "model.pt", weights_only=True)
    for key, value in ema.items():
        assert torch.allclose(shipped[key].float(), value.float()), key
    # a metadata model's test numbers come with and without its metadata
    bundle = load_bundle(tmp_path / "ema" / "bundle")
    assert bundle.metadata_fields and {"test", "test_image_only"} <= set(bundle.metrics)
    assert (tmp_path / "ema" / "eval-test-image-only" / "metrics.json").is_file()
    # resuming restores the average and keeps counting its steps
    assert main(["train", f"resume={tmp_path / 'ema'}", "epochs=3", "progress=False"]) == 0
    last = torch.load(tmp_path / "ema" / "last.pt", map_location="cpu", weights_only=False)
    assert last["ema_steps"] > best["ema_steps"]


def test_ema_out_of_range_is_rejected(tiny_ham, tmp_path, capsys):
    assert train_tiny(tiny_ham, tmp_path, "name=bad", "epochs=1", "ema=1.5") == 2
    assert "ema=1.5: must be between 0 and 1" in capsys.readouterr().err


def test_snapshots_keep_each_epochs_averaged_weights(tiny_ham, tmp_path):
    assert train_tiny(tiny_ham, tmp_path, "name=snap", "epochs=2", "ema=0.9", "snapshots=True") == 0
    folder = tmp_path / "snap" / "snapshots"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["e01.pt", "e02.pt"]
    last = torch.load(tmp_path / "snap" / "last.pt", map_location="cpu", weights_only=False)
    snap = torch.load(folder / "e02.pt", map_location="cpu", weights_only=False)
    assert snap["epoch"] == last["epoch"] == 1
    for key, value in last["ema"].items():
        assert torch.equal(snap["model"][key], value), key
    first = torch.load(folder / "e01.pt", map_location="cpu", weights_only=False)
    assert any(not torch.equal(first["model"][k], snap["model"][k]) for k in first["model"])
    assert snap["val"]["val_balanced_accuracy"] == last["history"][1]["val_balanced_accuracy"]
