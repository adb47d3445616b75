"""Evaluating a metadata model with and without its metadata (`--no-metadata`)."""

import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_bundle
from dermalens.bundle import load_bundle
from dermalens.cli import main
from dermalens.data.loaders import load_dataset
from dermalens.evaluation.evaluate import evaluate
from dermalens.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def meta_bundle(tmp_path_factory):
    path = make_tiny_bundle(tmp_path_factory.mktemp("meta") / "tiny-meta", use_metadata=True)
    # a random head barely looks at the metadata; make it matter so the test can see it
    import torch

    state = torch.load(path / "model.pt", weights_only=True)
    state["head.weight"][:, -32:] *= 50
    torch.save(state, path / "model.pt")
    from dermalens.files import sha256

    bundle = load_bundle(path, verify=False)
    bundle.info["weights_sha256"] = sha256(path / "model.pt")
    bundle.save_description()
    return path


def test_without_metadata_feeds_every_field_missing(meta_bundle, tiny_ham):
    with_meta = evaluate(meta_bundle, tiny_ham, backend="torch", progress=False)
    without = evaluate(meta_bundle, tiny_ham, backend="torch", progress=False, use_metadata=False)
    assert with_meta.metrics["metadata"] is True and without.metrics["metadata"] is False
    cols = [c for c in with_meta.predictions if c.startswith("p_") and c != "p_malignant"]
    assert not np.allclose(with_meta.predictions[cols], without.predictions[cols], atol=1e-4)
    # "without" is exactly the image-only answer of the predictor
    predictor = Predictor(load_bundle(meta_bundle), backend="torch", ood=False)
    table = load_dataset(tiny_ham).table
    for row, (_, pred) in zip(table.head(3).itertuples(), without.predictions.head(3).iterrows()):
        probs = predictor.predict(row.path).probabilities
        assert np.allclose(probs, pred[cols].to_numpy(float), atol=1e-5)


def test_cli_flag(meta_bundle, tiny_ham, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["evaluate", str(meta_bundle), str(tiny_ham), "--out", str(out), "--quiet"]
    assert main([*args, "--no-metadata", "--backend", "torch"]) == 0
    assert pd.read_json(out / "metrics.json", typ="series")["metadata"] is False


def test_withholding_one_field_feeds_only_that_field_missing(meta_bundle, tiny_ham):
    result = evaluate(meta_bundle, tiny_ham, backend="torch", progress=False, withhold=("age",))
    assert result.metrics["withheld"] == ["age"] and result.metrics["metadata"] is True
    cols = [c for c in result.predictions if c.startswith("p_") and c != "p_malignant"]
    predictor = Predictor(load_bundle(meta_bundle), backend="torch", ood=False)
    table = load_dataset(tiny_ham).table
    for row, (_, pred) in zip(table.head(3).itertuples(), result.predictions.head(3).iterrows()):
        known = {k: (None if pd.isna(v) else v) for k, v in (("sex", row.sex), ("site", row.site))}
        probs = predictor.predict(row.path, **known).probabilities
        assert np.allclose(probs, pred[cols].to_numpy(float), atol=1e-5)
        assert not np.allclose(probs, predictor.predict(row.path).probabilities, atol=1e-4)
    # withholding every field is the image-only evaluation
    every = evaluate(
        meta_bundle, tiny_ham, backend="torch", progress=False, withhold=("site", "sex", "age")
    )
    none = evaluate(meta_bundle, tiny_ham, backend="torch", progress=False, use_metadata=False)
    assert every.metrics["withheld"] == ["age", "sex", "site"]
    assert every.metrics["metadata"] is False
    assert np.allclose(every.predictions[cols], none.predictions[cols])


def test_unknown_withheld_field_is_refused_by_name(meta_bundle, tiny_ham, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown metadata field\(s\) \['agee'\]"):
        evaluate(meta_bundle, tiny_ham, progress=False, withhold=("agee",))
    args = ["evaluate", str(meta_bundle), str(tiny_ham), "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit):
        main([*args, "--withhold", "sex,location"])
    assert "unknown metadata field(s) ['location']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--withhold", "age", "--no-metadata"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_exact_duplicates_are_counted_once_unless_asked(tiny_bundle, tiny_ham, tmp_path):
    """Training drops all but one copy of byte-identical images; evaluation does the same."""
    import shutil

    data = tmp_path / "ham"
    shutil.copytree(tiny_ham, data)
    meta = pd.read_csv(data / "metadata.csv")
    first = meta.iloc[0]
    shutil.copy(data / "images" / f"{first['image_id']}.jpg", data / "images" / "copy_0.jpg")
    extra = {**first.to_dict(), "image_id": "copy_0", "lesion_id": "copy_lesion"}
    pd.concat([meta, pd.DataFrame([extra])]).to_csv(data / "metadata.csv", index=False)
    once = evaluate(tiny_bundle, data, progress=False).metrics
    every = evaluate(tiny_bundle, data, progress=False, keep_duplicates=True).metrics
    assert every["n"] == len(meta) + 1
    assert once["n"] == len(meta)
