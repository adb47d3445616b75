"""Every documented `dermalens` flag reaches the library function its command calls.

Each test runs `main([...])` with every flag of one subcommand set to a non-default value,
with the library function replaced by a spy that checks the call against the real
function's signature and records the bound arguments. `test_every_flag_is_covered` keeps
the list below in step with the parser, so a new flag without a test fails.

    pytest -q tests/test_cli_flags.py
"""

import argparse
import dataclasses
import importlib
import inspect
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from dermalens.cli import commands, main, predict_table, user_commands
from dermalens.cli.parser import parser
from dermalens.imageio import iter_images
from dermalens.runtime.archive import ArchiveSummary
from dermalens.runtime.folder import FolderItem
from dermalens.runtime.predictor import ClassScore, Prediction

# the flags the tests below set, per subcommand ("" is the top level)
TESTED = {
    "": {"-v", "--verbose"},
    "predict": {"--model", "--top-k", "--format", "--backend", "--precision", "--no-gate"},
    "predict-batch": {
        "--out",
        "--model",
        "--address",
        "--actors",
        "--cpus-per-actor",
        "--batch-size",
        "--top-k",
        "--progress",
        "--no-gate",
    },
    "train": set(),
    "evaluate": {
        "--split",
        "--split-file",
        "--out",
        "--backend",
        "--quiet",
        "--no-metadata",
        "--withhold",
        "--keep-duplicates",
    },
    "export": {"--check-images", "--half-weights", "--precision", "--data", "--split-file"},
    "calibrate": {
        "--split-file",
        "--split",
        "--out",
        "--temperature-only",
        "--ood-max-val-reject",
        "--record-test",
        "--shift-target",
        "--triage-under-shift",
        "--shift-only",
    },
    "ensemble": {"--out", "--name", "--data", "--split-file", "--reports", "--allow-other-splits"},
    "soup": {"--out", "--epochs", "--greedy", "--data", "--split-file", "--no-calibrate"},
    "data check": {"--json"},
    "serve": {"--model", "--host", "--port", "--workers"},
    "info": set(),
    "user add": {"--role", "--password-stdin", "--password-env"},
    "user password": {"--password-stdin", "--password-env"},
    "user disable": set(),
    "user enable": set(),
    "user list": set(),
}


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {
        flag
        for action in p._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help")
    }


def _commands(p: argparse.ArgumentParser, prefix: str = ""):
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix.strip(), p
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, f"{prefix}{name} ")


def test_every_flag_is_covered():
    top = parser()
    found = {name: _flags(sub) for name, sub in _commands(top)}
    found[""] = _flags(top)
    assert found == TESTED


def spy(monkeypatch, owner, name: str, result=None, calls=None) -> list[dict]:
    """Replace `owner.name` by a fake that binds each call to the real signature (so a
    keyword the library does not take fails here), records the arguments (in `calls`, when
    given) and returns `result`."""
    signature = inspect.signature(getattr(owner, name))
    calls = [] if calls is None else calls

    def fake(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))
        return result

    monkeypatch.setattr(owner, name, fake)
    return calls


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def prediction(source: str) -> Prediction:
    return Prediction(
        classes=["mel", "nv"],
        probabilities=[0.25, 0.75],
        top=[ClassScore("nv", "naevus", 0.75, False), ClassScore("mel", "melanoma", 0.25, True)],
        malignant_probability=0.25,
        triage="benign",
        triage_rule="test",
        uncertain=False,
        model_version="fake@0",
        source=source,
    )


@pytest.fixture
def fake_predict(monkeypatch):
    """Spies on `Router.installed`, `Predictor` (with --no-gate, both in `cli.predict_table`)
    and `predict_folder` in `cli.commands`; `made` holds the router's or predictor's arguments."""
    model = SimpleNamespace(bundle=SimpleNamespace(version="fake@0", info={}), shift=None)
    router = SimpleNamespace(pinned=model, routes={}, feature=model, shift=None)
    made = spy(monkeypatch, predict_table.Router, "installed", router)
    spy(monkeypatch, predict_table, "Predictor", model, calls=made)
    folder_calls: list[dict] = []
    signature = inspect.signature(commands.predict_folder)

    def folder(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        folder_calls.append(dict(bound.arguments))
        return (FolderItem(Path(p), prediction(str(p))) for p in bound.arguments["paths"])

    monkeypatch.setattr(commands, "predict_folder", folder)
    return made, folder_calls


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_predict_flags(fake_predict, fixture_images, capsys, fmt):
    made, folder_calls = fake_predict
    images = [str(p) for p in fixture_images[:2]]
    code, out, _ = run(
        capsys,
        "predict",
        *images,
        "--model",
        "some/bundle",
        "--top-k",
        "5",
        "--format",
        fmt,
        "--backend",
        "onnx",
        "--precision",
        "fp32",
    )
    assert code == 0
    [call] = made
    assert (call["pin"], call["options"]) == (
        "some/bundle",
        {"backend": "onnx", "precision": "fp32"},
    )
    [call] = folder_calls
    assert call["top_k"] == 5 and [str(p) for p in call["paths"]] == images
    if fmt == "json":
        assert [r["source"] for r in json.loads(out)] == images
    else:
        lines = out.strip().splitlines()
        assert lines[0].startswith("path,top1,") and lines[1].startswith(f"{images[0]},nv,0.7500")


def test_predict_table_is_the_default(fake_predict, fixture_images, capsys, monkeypatch):
    monkeypatch.delenv("DERMALENS_MODEL", raising=False)
    made, _ = fake_predict
    code, out, _ = run(capsys, "predict", str(fixture_images[0]))
    assert code == 0 and "model: fake@0" in out and "triage: benign" in out
    assert made[0]["pin"] is None
    assert made[0]["options"] == {"backend": "auto", "precision": "auto"}


def test_predict_no_gate_runs_one_predictor(fake_predict, fixture_images, capsys):
    made, _ = fake_predict
    code, out, _ = run(capsys, "predict", str(fixture_images[0]), "--no-gate", "--model", "b")
    assert code == 0 and "triage: benign" in out
    [call] = made
    assert (call["bundle"], call["backend"], call["precision"]) == ("b", "auto", "auto")


def _archive_summary(**changes) -> ArchiveSummary:
    summary = ArchiveSummary(
        out="s3://b/r/bundle=0123456789abcdef",
        model_version="fake@0",
        bundle_sha256="0123456789abcdef" * 4,
        images=10,
        skipped=4,
        written=6,
        rows=10,
        errors=1,
        seconds=2.5,
        actors=3,
    )
    return dataclasses.replace(summary, **changes)


def test_predict_batch_flags(monkeypatch, capsys):
    calls = spy(monkeypatch, commands, "predict_archive", _archive_summary())
    code, out, _ = run(
        capsys,
        "predict-batch",
        "s3://b/manifest.parquet",
        "--out",
        "s3://b/r",
        "--model",
        "some/bundle",
        "--address",
        "ray://head:10001",
        "--actors",
        "3",
        "--cpus-per-actor",
        "2",
        "--batch-size",
        "16",
        "--top-k",
        "5",
        "--progress",
        "--no-gate",
    )
    assert code == 0
    [call] = calls
    assert call["gate"] is False
    assert (call["source"], call["out"], call["model"]) == (
        "s3://b/manifest.parquet",
        "s3://b/r",  # a URI stays a string: a Path would fold "s3://" into "s3:/"
        "some/bundle",
    )
    assert (call["address"], call["actors"], call["cpus_per_actor"]) == ("ray://head:10001", 3, 2)
    assert (call["batch_size"], call["top_k"], call["progress"]) == (16, 5, True)
    assert "10 images: 4 already done, 6 predicted in 2.5 s on 3 actors" in out
    assert "results: s3://b/r/bundle=0123456789abcdef (10 rows, 1 with an error)" in out


def test_predict_batch_defaults(monkeypatch, capsys):
    calls = spy(monkeypatch, commands, "predict_archive", _archive_summary())
    assert run(capsys, "predict-batch", "scans", "--out", "results")[0] == 0
    [call] = calls
    assert (call["model"], call["address"], call["actors"], call["cpus_per_actor"]) == (
        None,
        None,
        0,
        1,
    )
    assert (call["batch_size"], call["top_k"], call["progress"]) == (32, 3, False)
    assert call["gate"] is True  # the scope gate, as `dermalens predict`


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--actors", "-1", "must be 0 or more, got -1"),
        ("--cpus-per-actor", "0", "must be 1 or more, got 0"),
        ("--batch-size", "many", "not a whole number: 'many'"),
    ],
)
def test_predict_batch_rejects_bad_counts(capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["predict-batch", "scans", "--out", "r", flag, value])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_predict_batch_without_the_scale_extra(monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    monkeypatch.setattr(commands, "predict_archive", missing)
    code, _, err = run(capsys, "predict-batch", "scans", "--out", "r")
    assert code == 2
    assert "needs the scale extra (Ray Data): pip install -e '.[scale]'" in err


def test_verbose_sets_info_logging(monkeypatch, capsys):
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    spy(monkeypatch, commands, "check_main", 0)
    assert run(capsys, "-v", "data", "check", "d")[0] == 0
    assert run(capsys, "--verbose", "data", "check", "d")[0] == 0
    assert run(capsys, "data", "check", "d")[0] == 0
    assert levels == [logging.INFO, logging.INFO, logging.WARNING]


def test_train_file_and_overrides(monkeypatch, tmp_path, capsys):
    module = importlib.import_module("dermalens.training.train")
    calls = spy(monkeypatch, module, "train", SimpleNamespace(path=tmp_path / "run" / "bundle"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"epochs": 3, "lr": 0.1}))
    code, out, _ = run(capsys, "train", str(config), "lr=0.5", "name=flagged")
    assert code == 0 and out.strip() == f"bundle: {tmp_path / 'run' / 'bundle'}"
    cfg = calls[0]["cfg"]
    assert (cfg.epochs, cfg.lr, cfg.name) == (3, 0.5, "flagged")  # the command line wins
    run(capsys, "train", "epochs=2")  # no file: the first word is an override too
    assert calls[1]["cfg"].epochs == 2


def _eval_result():
    row = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "auc": None, "support": 2}
    external = {
        "n": 2,
        "classes_present": ["mel"],
        "headline": {"turned_away": 0.0, "uncertain": 0.5, "ece": 0.1},
        "triage": {"skipped": "one class only"},
        "shift": None,
        "compared_with_bundle_test": {},
        "notes": ["a note"],
    }
    metrics = {"accuracy": 0.5, "per_class": {"mel": row}, "external": external, "left_out": {}}
    return SimpleNamespace(metrics=metrics)


def test_evaluate_flags(monkeypatch, tmp_path, capsys):
    calls = spy(monkeypatch, commands, "evaluate", _eval_result())
    common = ["evaluate", "m", "d", "--split", "test", "--split-file", "s.csv", "--out"]
    code, out, _ = run(
        capsys, *common, str(tmp_path), "--backend", "onnx", "--quiet", "--withhold", "site,age"
    )
    assert code == 0 and "accuracy=0.5000" in out and f"report: {tmp_path}" in out
    assert "triage: one class only" in out and "note: a note" in out
    call = calls[0]
    assert (call["model"], call["data"], call["split"], call["split_file"]) == (
        "m",
        "d",
        "test",
        "s.csv",
    )
    assert call["out_dir"] == tmp_path and call["backend"] == "onnx"
    assert call["progress"] is False and call["withhold"] == ("age", "site")  # FIELDS order
    assert call["use_metadata"] is True and call["keep_duplicates"] is False
    run(capsys, *common, str(tmp_path), "--no-metadata", "--keep-duplicates")
    call = calls[1]
    assert call["use_metadata"] is False and call["keep_duplicates"] is True
    assert call["withhold"] == () and call["progress"] is True and call["backend"] == "auto"


def test_evaluate_default_report_folder(monkeypatch, capsys):
    calls = spy(monkeypatch, commands, "evaluate", _eval_result())
    run(capsys, "evaluate", "m", "data/ham")
    assert calls[0]["out_dir"] == Path("runs") / "eval" / "ham" and calls[0]["split"] == "all"


def _export_spies(monkeypatch):
    module = importlib.import_module("dermalens.export.to_onnx")
    check = {"images": 7, "max_abs_prob_diff": 1e-6, "top1_agreement": 1.0}
    onnx = spy(monkeypatch, module, "export_onnx", check)
    record = {"top1_agreement": 1.0, "max_abs_prob_diff": 0.001, "images": 9}
    variants = spy(monkeypatch, commands, "export_variants", {"fp32": record})
    return onnx, variants


def test_export_flags(monkeypatch, fixture_images, capsys):
    onnx, variants = _export_spies(monkeypatch)
    folder = str(fixture_images[0].parent)
    code, out, _ = run(
        capsys,
        "export",
        "m",
        "--check-images",
        folder,
        "--half-weights",
        "--precision",
        "fp32",
        "--data",
        "d",
        "--split-file",
        "s.csv",
    )
    assert code == 0
    [call] = onnx
    assert call["bundle_path"] == "m" and call["half_weights"] is True
    assert call["check_images"] == iter_images([folder])[:64] == fixture_images
    [call] = variants
    assert call["bundle_path"] == "m" and call["precisions"] == ["fp32"]
    assert (call["data"], call["split_file"]) == ("d", "s.csv")
    assert "fp32 variant kept: top-1 agreement 1.0000" in out and "on 9 held-out" in out


def test_export_without_flags(monkeypatch, capsys):
    onnx, variants = _export_spies(monkeypatch)
    assert run(capsys, "export", "m")[0] == 0
    assert onnx[0]["check_images"] is None and onnx[0]["half_weights"] is False
    assert variants == []


@pytest.mark.parametrize("given", [[], ["--data", "d"], ["--split-file", "s.csv"]])
def test_export_precision_needs_data_and_split_file(monkeypatch, capsys, given):
    onnx, variants = _export_spies(monkeypatch)
    code, _, err = run(capsys, "export", "m", "--precision", "fp32", *given)
    assert code == 2
    assert err.strip() == (
        "dermalens export: error: --precision needs --data and --split-file "
        "(the variant is checked on the split's test images)"
    )
    assert onnx == [] and variants == []  # nothing written before the refusal


def test_calibrate_flags(monkeypatch, tmp_path, capsys):
    calls = spy(
        monkeypatch, commands, "calibrate_bundle", {"temperature": 1.5, "test": {"accuracy": 0.5}}
    )
    code, out, _ = run(
        capsys,
        "calibrate",
        "m",
        "d",
        "--split-file",
        "s.csv",
        "--split",
        "train",
        "--out",
        str(tmp_path),
        "--temperature-only",
        "--ood-max-val-reject",
        "0.05",
        "--record-test",
    )
    assert code == 0 and "test: accuracy=0.5000" in out and '"temperature": 1.5' in out
    call = calls[0]
    assert (call["bundle_path"], call["data"], call["split_file"], call["split"]) == (
        "m",
        "d",
        "s.csv",
        "train",
    )
    assert call["out_dir"] == tmp_path and call["record_test"] is True
    assert call["targets"].class_bias is False and call["targets"].ood_max_val_reject == 0.05
    run(capsys, "calibrate", "m", "d", "--split-file", "s.csv")
    call = calls[1]
    assert call["split"] == "val" and call["out_dir"] is None and call["record_test"] is False
    assert call["targets"].class_bias is True and call["targets"].ood_max_val_reject == 0.02
    assert call["targets"].triage_under_shift is False
    run(
        capsys,
        "calibrate",
        "m",
        "d",
        "--split-file",
        "s.csv",
        "--shift-target",
        "0.04",
        "--triage-under-shift",
    )
    targets = calls[2]["targets"]
    assert targets.shift_target == 0.04 and targets.triage_under_shift is True


def test_calibrate_shift_only(monkeypatch, capsys):
    calibrated = spy(monkeypatch, commands, "calibrate_bundle", {})
    fits = spy(monkeypatch, commands, "fit_shift_warning", {"flagged_share": 0.03})
    code, out, _ = run(
        capsys,
        "calibrate",
        "m",
        "d",
        "--split-file",
        "s.csv",
        "--shift-only",
        "--shift-target",
        "0.05",
    )
    assert code == 0 and '"flagged_share": 0.03' in out and calibrated == []
    [fit] = fits
    assert (fit["bundle_path"], fit["data"], fit["split_file"], fit["split"]) == (
        "m",
        "d",
        "s.csv",
        "val",
    )
    assert fit["target"] == 0.05


def test_calibrate_rejects_a_share_outside_0_1(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "m", "d", "--split-file", "s", "--ood-max-val-reject", "2"])
    assert exit_.value.code == 2
    assert "must lie between 0 and 1, got 2" in capsys.readouterr().err


def test_ensemble_flags(monkeypatch, tmp_path, capsys):
    out_dir = tmp_path / "ens"
    bundle = SimpleNamespace(path=out_dir, info={"members": ["a", "b"]})
    built = spy(monkeypatch, commands, "build_ensemble", bundle)
    calibrated = spy(monkeypatch, commands, "calibrate_bundle", {"temperature": 1.0})
    code, out, _ = run(
        capsys,
        "ensemble",
        "a",
        "b",
        "--out",
        str(out_dir),
        "--name",
        "pair",
        "--data",
        "d",
        "--split-file",
        "s.csv",
        "--reports",
        str(tmp_path / "reports"),
        "--allow-other-splits",
    )
    assert code == 0 and f"ensemble of 2 members written to {out_dir}" in out
    [call] = built
    assert call["members"] == ["a", "b"] and call["out"] == out_dir
    assert call["name"] == "pair" and call["allow_other_splits"] is True
    [call] = calibrated
    assert (call["bundle_path"], call["data"], call["split_file"]) == (out_dir, "d", "s.csv")
    assert call["out_dir"] == tmp_path / "reports" and call["record_test"] is True


def test_ensemble_defaults_and_half_a_pair(monkeypatch, tmp_path, capsys):
    out_dir = tmp_path / "ens"
    bundle = SimpleNamespace(path=out_dir, info={"members": ["a", "b"]})
    built = spy(monkeypatch, commands, "build_ensemble", bundle)
    calibrated = spy(monkeypatch, commands, "calibrate_bundle", {})
    code, out, _ = run(capsys, "ensemble", "a", "b", "--out", str(out_dir))
    assert code == 0 and "not calibrated yet" in out and calibrated == []
    assert built[0]["name"] == "" and built[0]["allow_other_splits"] is False
    run(capsys, "ensemble", "a", "b", "--out", str(out_dir), "--data", "d", "--split-file", "s")
    assert calibrated[0]["out_dir"] == tmp_path / "ens-calibration"
    code, _, err = run(capsys, "ensemble", "a", "b", "--out", str(out_dir), "--data", "d")
    assert code == 2 and "give --data and --split-file together" in err


def test_soup_flags(monkeypatch, tmp_path, capsys):
    module = importlib.import_module("dermalens.training.soup")
    steps = [{"val_balanced_accuracy": 0.5, "epochs": [2], "kept": True}]
    bundle = SimpleNamespace(
        path=tmp_path / "soup",
        info={"soup": {"epochs": [2, 3], "greedy_steps": steps}},
        metrics={"test": {"accuracy": 0.5}},
    )
    calls = spy(monkeypatch, module, "build_soup", bundle)
    common = ["soup", "run1", "--out", str(tmp_path / "soup")]
    extra = ["--data", "d", "--split-file", "s.csv", "--no-calibrate"]
    code, out, _ = run(capsys, *common, "--epochs", "2", "3", *extra)
    assert code == 0 and "average of epochs [2, 3]" in out and "test: accuracy=0.5000" in out
    call = calls[0]
    assert call["run"] == Path("run1") and call["out"] == tmp_path / "soup"
    assert call["epochs"] == [2, 3] and call["greedy"] is False
    assert (call["data"], call["split_file"], call["calibrate"]) == ("d", "s.csv", False)
    run(capsys, *common, "--greedy")
    call = calls[1]
    assert call["epochs"] is None and call["greedy"] is True and call["calibrate"] is True
    assert call["data"] is None and call["split_file"] is None


def test_data_check_flags(monkeypatch, capsys):
    calls = spy(monkeypatch, commands, "check_main", 1)
    assert run(capsys, "data", "check", "d", "--json")[0] == 1  # its exit code passes through
    assert run(capsys, "data", "check", "d")[0] == 1
    assert calls == [{"path": "d", "as_json": True}, {"path": "d", "as_json": False}]


def test_serve_flags(monkeypatch, capsys):
    module = importlib.import_module("dermalens.serve")
    calls = spy(monkeypatch, module, "run")
    assert run(capsys, "serve", "--model", "m", "--host", "0.0.0.0", "--port", "9001")[0] == 0
    assert run(capsys, "serve")[0] == 0
    assert calls[0] == {"model": "m", "host": "0.0.0.0", "port": 9001, "overrides": {}}
    assert calls[1] == {"model": None, "host": None, "port": None, "overrides": {}}
    assert run(capsys, "serve", "--workers", "2")[0] == 0
    assert calls[2]["overrides"] == {"workers": "2"}  # checked by Settings (DERMALENS_WORKERS)


def test_info_model(monkeypatch, capsys):
    described = SimpleNamespace(description=lambda: {"name": "x", "history": [1, 2]})
    calls = spy(monkeypatch, commands, "load_bundle", described)
    monkeypatch.setattr(commands, "default_model_path", lambda: Path("bundled/default"))
    code, out, _ = run(capsys, "info", "m")
    assert code == 0 and json.loads(out) == {"name": "x"}  # the training history is left out
    run(capsys, "info")
    assert [c["path"] for c in calls] == ["m", Path("bundled/default")]


def test_user_flags(monkeypatch, capsys):
    module = importlib.import_module("dermalens.serve.staff")
    added = spy(monkeypatch, module, "add_user", {"username": "ada", "role": "admin"})
    monkeypatch.setattr("sys.stdin", io.StringIO("a long pass phrase\n"))
    code, out, _ = run(capsys, "user", "add", "--role", "admin", "ada", "--password-stdin")
    assert code == 0 and json.loads(out) == {"username": "ada", "role": "admin"}
    monkeypatch.setenv("NEW_PW", "another pass phrase")
    run(capsys, "user", "add", "bob", "--password-env", "NEW_PW")
    monkeypatch.setattr(user_commands.getpass, "getpass", lambda prompt="": "typed pass phrase")
    run(capsys, "user", "add", "cy")
    assert [(c["username"], c["role"], c["password"]) for c in added] == [
        ("ada", "admin", "a long pass phrase"),
        ("bob", "clinician", "another pass phrase"),
        ("cy", "clinician", "typed pass phrase"),
    ]
    states = spy(monkeypatch, module, "set_user_disabled", {})
    run(capsys, "user", "disable", "bob")
    run(capsys, "user", "enable", "bob")
    assert [(c["username"], c["disabled"]) for c in states] == [("bob", True), ("bob", False)]
    listed = spy(monkeypatch, module, "list_users", [])
    assert run(capsys, "user", "list")[0] == 0 and len(listed) == 1


def test_user_add_refuses_a_missing_password_source(monkeypatch, capsys):
    module = importlib.import_module("dermalens.serve.staff")
    added = spy(monkeypatch, module, "add_user", {})
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["user", "add", "ada", "--password-env", "NO_SUCH_PW"])
    assert str(exit_.value) == "dermalens user add: $NO_SUCH_PW is unset or empty"
    answers = iter(["first pass phrase", "other pass phrase"])
    monkeypatch.setattr(user_commands.getpass, "getpass", lambda prompt="": next(answers))
    with pytest.raises(SystemExit) as exit_:
        main(["user", "add", "ada"])
    assert "the two passwords differ; nothing was changed" in str(exit_.value)
    assert added == []


def test_user_add_writes_a_real_account(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DERMALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PW", "short")
    code, _, err = run(capsys, "user", "add", "ada", "--password-env", "PW")
    assert code == 2
    assert err.strip() == "dermalens user: error: password is too short: at least 12 characters"
    monkeypatch.setenv("PW", "a long enough pass phrase")
    code, out, _ = run(capsys, "user", "add", "--role", "admin", "ada", "--password-env", "PW")
    assert code == 0 and json.loads(out)["role"] == "admin"
    code, _, err = run(capsys, "user", "add", "ada", "--password-env", "PW")
    assert code == 2 and err.strip() == "dermalens user: error: user 'ada' already exists"
    code, out, _ = run(capsys, "user", "disable", "ada")
    assert code == 0 and json.loads(out)["disabled"] is True
    monkeypatch.setenv("PW", "a new long pass phrase")
    code, out, _ = run(capsys, "user", "password", "ada", "--password-env", "PW")
    assert code == 0 and json.loads(out)["username"] == "ada"
    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    code, _, err = run(capsys, "user", "password", "ada", "--password-stdin")
    assert code == 2 and "password is too short" in err
    code, _, err = run(capsys, "user", "enable", "nobody")
    assert code == 2 and err.strip() == "dermalens user: error: no user 'nobody'"
