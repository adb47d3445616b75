"""Weight averaging of epoch snapshots (`dermalens soup`)."""

import pytest
import torch

from conftest import train_tiny
from dermalens.bundle import load_bundle
from dermalens.cli import main
from dermalens.runtime.predictor import Predictor
from dermalens.training.soup import average_weights, list_snapshots

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def snap_run(tiny_ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("soup")
    extra = ["name=run", "epochs=3", "patience=9", "ema=0.9", "snapshots=True"]
    assert train_tiny(tiny_ham, out, *extra) == 0
    return out / "run"


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_average_of_two_epochs_is_their_mean(snap_run, tmp_path, fixture_images):
    out = tmp_path / "soup12"
    assert (
        main(["soup", str(snap_run), "--out", str(out), "--epochs", "1", "2", "--no-calibrate"])
        == 0
    )
    bundle = load_bundle(out)
    assert bundle.info["soup"]["epochs"] == [1, 2]
    shipped = torch.load(out / "model.pt", weights_only=True)
    first, second = _weights(snap_run / "snapshots/e01.pt"), _weights(snap_run / "snapshots/e02.pt")
    for key, value in shipped.items():
        if value.is_floating_point():
            assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-6), key
    # a one-epoch soup is that epoch's model, and the bundle serves like any other
    assert (
        main(
            [
                "soup",
                str(snap_run),
                "--out",
                str(tmp_path / "e3"),
                "--epochs",
                "3",
                "--no-calibrate",
            ]
        )
        == 0
    )
    third = _weights(snap_run / "snapshots/e03.pt")
    for key, value in torch.load(tmp_path / "e3" / "model.pt", weights_only=True).items():
        assert torch.equal(value, third[key]), key
    prediction = Predictor(out).predict(fixture_images[0])
    assert prediction.top[0].code in bundle.classes


def test_greedy_soup_starts_from_the_best_epoch_and_records_test(snap_run, tmp_path):
    out = tmp_path / "greedy"
    assert main(["soup", str(snap_run), "--out", str(out), "--greedy"]) == 0
    bundle = load_bundle(out)
    steps = bundle.info["soup"]["greedy_steps"]
    best = max(list_snapshots(snap_run), key=lambda s: (s.val_balanced_accuracy, -s.epoch))
    assert steps[0]["epochs"] == [best.epoch] and len(steps) == 3
    kept = sorted({e for s in steps if s["kept"] for e in s["epochs"]})
    assert bundle.info["soup"]["epochs"] == kept
    assert all(
        s["val_balanced_accuracy"] >= steps[0]["val_balanced_accuracy"] for s in steps if s["kept"]
    )
    assert "test" in bundle.metrics and bundle.thresholds


def test_average_weights_refuses_different_architectures():
    with pytest.raises(Exception, match="different architectures"):
        average_weights([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])


def test_soup_errors_name_the_problem(snap_run, tiny_ham, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["soup", str(snap_run), "--out", out, "--epochs", "9", "--no-calibrate"]) == 2
    assert "no snapshot for epoch(s) [9]; it has [1, 2, 3]" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["soup", str(plain), "--out", out, "--greedy"]) == 2
    assert "no epoch snapshots" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "snapshots").mkdir(parents=True)
    (broken / "snapshots" / "e01.pt").write_bytes(b"not a checkpoint")
    assert main(["soup", str(broken), "--out", out, "--greedy"]) == 2
    assert "not a readable snapshot" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_soup_refuses_a_split_that_tests_on_training_images(snap_run, tiny_ham, tmp_path, capsys):
    import pandas as pd

    table = pd.read_csv(snap_run / "split.csv", dtype=str)
    table["split"] = table["split"].replace({"train": "test", "test": "train"})
    swapped = tmp_path / "swapped.csv"
    table.to_csv(swapped, index=False)
    args = ["soup", str(snap_run), "--out", str(tmp_path / "x"), "--epochs", "1"]
    assert main([*args, "--data", str(tiny_ham), "--split-file", str(swapped)]) == 2
    assert "images the run trained on" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_soup_split_check_catches_another_image_of_a_trained_lesion(tmp_path):
    import pandas as pd
    import pytest

    from dermalens.data.splits import check_not_trained_on
    from dermalens.errors import DataError

    own_csv, other_csv = tmp_path / "own.csv", tmp_path / "other.csv"
    own = pd.DataFrame(
        {
            "image_id": ["a1", "a2", "b1", "c1"],
            "group": ["lesion-a", "lesion-a", "lesion-b", "lesion-c"],
            "split": ["train", "train", "val", "test"],
        }
    )
    check_not_trained_on(
        own, own.assign(split=["train", "train", "test", "val"]), own_csv, other_csv
    )  # val and test swapped: nothing trained is held out
    with pytest.raises(DataError, match=r"1 images the run trained on and 0 other .* e\.g\. a2"):
        check_not_trained_on(
            own, own.assign(split=["train", "val", "val", "test"]), own_csv, other_csv
        )
    # The data now says c1 is another image of lesion-a (the split was drawn when it was
    # not): an image-level check would pass it, the lesion-level one does not.
    relabelled = own.assign(group=["lesion-a", "lesion-a", "lesion-b", "lesion-a"])
    with pytest.raises(
        DataError,
        match=r"0 images the run trained on and 1 other images of "
        r"lesions it trained on .* e\.g\. c1",
    ):
        check_not_trained_on(relabelled, relabelled, own_csv, other_csv)
