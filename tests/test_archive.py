"""Archive prediction on Ray Data (`dermalens predict-batch`), run on a local Ray here.

Its Parquet rows must equal `Router.predict` (the scope gate in front of the installed
models, as `dermalens predict`) on the same images and metadata: status, the gate's kind,
the model that answered, triage, probabilities, shift warning; an image the gate turns
away (a flat frame, a phone close-up no installed model covers) gets no triage. With
`gate=False` they equal `Predictor.predict` of the one model. A bad or missing image must
be a row with its error (never a failed job), and a rerun must skip what the same models
already did while other models write apart. One local Ray with 2
CPUs serves the whole module. Needs the scale extra; under CI (CI set) a missing extra is
a failure, not a skip.

    pytest -q tests/test_archive.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import DEFAULT_MODEL, HAM_FIXTURES, ROOT
from dermalens.cli import main
from dermalens.data.records import DataError
from dermalens.runtime.predictor import Prediction, Predictor
from dermalens.runtime.router import Router
from dermalens.runtime.scope import load_gate

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
except ModuleNotFoundError:
    if os.environ.get("CI"):
        raise  # .ci/run installs the scale extra: these tests must run there
    pytest.skip("needs the scale extra: pip install -e '.[scale]'", allow_module_level=True)

from dermalens.runtime.archive import predict_archive, start_ray  # noqa: E402
from dermalens.runtime.archive_io import results_schema  # noqa: E402

# Ray Data's own DataContext warns of its deprecated fields: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

CLOSE = 1e-5  # probabilities: batched in an actor against one image at a time


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        started = start_ray(None, num_cpus=2)
        yield
        if started:
            ray.shutdown()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(DEFAULT_MODEL, backend="onnx", precision="fp32")


@pytest.fixture(scope="module")
def router() -> Router:
    """What `dermalens predict` answers with (the actors run fp32 ONNX Runtime too)."""
    if load_gate() is None:
        pytest.skip("no bundled scope gate")
    return Router.installed(backend="onnx", precision="fp32")


def _exif_rotated(source: Path, target: Path) -> None:
    """Pixels stored sideways plus EXIF Orientation=6, as a phone writes them."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image = Image.open(source).transpose(Image.Transpose.ROTATE_90)
    image.save(target, quality=95, exif=exif.tobytes())


PAD_IMAGE = HAM_FIXTURES.parent / "pad" / "images" / "PAT_263_403_966.png"  # a phone close-up


@pytest.fixture(scope="module")
def scans(tmp_path_factory, fixture_images) -> Path:
    """The fixture images, an EXIF-rotated one, a PNG in a sub-folder, a flat grey frame
    and a PAD-UFES-20 phone close-up (both turned away by the gate), and bad files."""
    root = tmp_path_factory.mktemp("scans")
    for f in fixture_images:
        shutil.copy(f, root / f.name)
    _exif_rotated(fixture_images[0], root / "rotated.jpg")
    (root / "sub").mkdir()
    Image.open(fixture_images[1]).save(root / "sub" / "nested.png")
    Image.new("RGB", (200, 150), (128, 128, 128)).save(root / "grey.png")
    shutil.copy(PAD_IMAGE, root / "phone.png")
    data = fixture_images[2].read_bytes()
    (root / "cut_half.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("meeting notes, not a picture\n")
    (root / "readme.txt").write_text("not an image name: left out\n")
    return root


BAD = {
    "cut_half.jpg": "truncated or corrupt image (image file is truncated",
    "empty.jpg": "empty file (0 bytes)",
    "notes.jpg": "not an image (unrecognised format)",
}


def rows(out: str) -> dict[str, dict]:
    frame = pd.read_parquet(out)
    assert frame["source"].is_unique
    return {r["source"]: r for r in frame.to_dict("records")}


def _plain(value):
    """A Parquet value as `Prediction.to_dict()` has it: arrays as lists, maps as dicts."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list):
        items = [_plain(v) for v in value]
        pairs = all(isinstance(v, tuple) and len(v) == 2 for v in items)
        return dict(items) if items and pairs else items
    return value


def assert_same(row: dict, result: Prediction, by: Router | None = None) -> None:
    """A results row against `Router.predict` (or `Predictor.predict`) of the same image;
    `by`: the router that answered, which names the answering bundle."""
    expected = result.to_dict()
    assert row["error"] == ""
    assert list(row["classes"]) == expected["classes"]
    np.testing.assert_allclose(row["probabilities"], expected["probabilities"], atol=CLOSE)
    assert [t["code"] for t in row["top"]] == [t["code"] for t in expected["top"]]
    assert [t["name"] for t in row["top"]] == [t["name"] for t in expected["top"]]
    np.testing.assert_allclose(
        [t["probability"] for t in row["top"]],
        [t["probability"] for t in expected["top"]],
        atol=CLOSE,
    )
    if expected["malignant_probability"] is None:  # no model answered: no triage
        assert pd.isna(row["malignant_probability"]) and pd.isna(row["label"])
        assert pd.isna(row["ood_score"]) and expected["ood_score"] is None
    else:
        assert row["malignant_probability"] == pytest.approx(
            expected["malignant_probability"], abs=CLOSE
        )
        assert row["ood_score"] == pytest.approx(expected["ood_score"], abs=1e-4)
        assert row["label"] == expected["top"][0]["code"]
    for name in ("triage", "triage_rule", "uncertain", "not_skin", "not_skin_reason", "tta"):
        assert row[name] == expected[name], name
    assert (row["model_version"], row["status"]) == (result.model_version, result.status)
    scope = _plain(row["scope"])
    if result.scope is None:
        assert scope is None and pd.isna(row["scope_kind"])
    else:
        want = expected["scope"]
        assert scope["scores"] == pytest.approx(want["scores"], abs=1e-3), scope["scores"]
        assert {**scope, "scores": {}} == {**want, "scores": {}}
        assert row["scope_kind"] == result.scope.kind
    if by is not None:
        answered = by.answered_by(result)
        name = None if pd.isna(row["answered_by"]) else row["answered_by"]
        assert name == (None if answered is None else answered.bundle.name)
        if result.scope is not None:
            assert name == result.scope.model
    assert _plain(row["shift"]) == expected["shift"]
    shifted = None if pd.isna(row["shifted"]) else bool(row["shifted"])
    assert shifted == (None if result.shift is None else result.shift.flagged)


def test_folder_rows_equal_router(scans, tmp_path, router):
    summary = predict_archive(scans, tmp_path / "results", batch_size=4)
    images = sorted(p for p in scans.rglob("*") if p.suffix in (".jpg", ".png"))
    assert (summary.images, summary.written, summary.skipped) == (len(images), len(images), 0)
    assert (summary.rows, summary.errors, summary.actors) == (len(images), len(BAD), 2)
    assert summary.gate and summary.gate.startswith("scope-gate@")
    assert summary.routes["dermoscopic"] == router.feature.bundle.version
    got = rows(summary.out)
    assert sorted(got) == [str(p) for p in images]  # readme.txt is not an image name
    statuses = {}
    for path in images:
        row = got[str(path)]
        assert row["bundle_sha256"] == summary.bundle_sha256
        if path.name in BAD:
            assert row["error"].startswith(f"{path}: {BAD[path.name]}"), row["error"]
            assert pd.isna(row["label"]) and row["probabilities"] is None
            assert row["model_version"] == router.feature.bundle.version
            assert row["status"] == "error" and pd.isna(row["answered_by"])
            assert row["scope"] is None and row["shift"] is None
        else:
            expected = router.predict(path)
            assert_same(row, expected, router)
            assert row["source"] == str(path) and np.isnan(row["age"])
        statuses[path.name] = row["status"]
    # turned away by the gate: no model answered, so no classes and no triage
    grey = got[str(scans / "grey.png")]
    assert (grey["status"], grey["scope_kind"], grey["triage"]) == ("not_skin",) * 3
    phone = got[str(scans / "phone.png")]
    assert phone["scope_kind"] == "clinical"
    if "clinical" not in router.routes:
        assert phone["status"] == "out_of_scope" and pd.isna(phone["answered_by"])
        assert phone["scope"]["reason"] == "no_model" and list(phone["probabilities"]) == []
    upright = router.predict(HAM_FIXTURES / "ISIC_0024306.jpg").to_dict()
    assert got[str(scans / "rotated.jpg")]["label"] == upright["top"][0]["code"]
    # this run's counts, as `runtime.router.summarise` gives them
    expected_counts: dict[str, int] = {}
    for status in statuses.values():
        expected_counts[status] = expected_counts.get(status, 0) + 1
    assert {k: n for k, n in summary.counts.items() if not k.startswith("answered")} == (
        expected_counts
    )


def test_without_the_gate_rows_equal_the_one_model(scans, tmp_path, predictor):
    gated = predict_archive(scans, tmp_path / "results", batch_size=8)
    alone = predict_archive(scans, tmp_path / "results", batch_size=8, gate=False)
    assert alone.bundle_sha256 != gated.bundle_sha256 and alone.gate is None
    assert (alone.written, alone.errors, alone.model_version) == (
        gated.written,
        len(BAD),
        predictor.bundle.version,
    )
    got = rows(alone.out)
    for path in sorted(p for p in scans.rglob("*") if p.suffix in (".jpg", ".png")):
        if path.name not in BAD:
            expected = predictor.predict(path)
            assert_same(got[str(path)], expected)
            assert got[str(path)]["answered_by"] == predictor.bundle.name
    # the one model answers the phone photo too (its own OOD check is all that runs)
    assert got[str(scans / "phone.png")]["probabilities"] is not None
    # folders written before the status, scope and shift columns read as nulls there
    old = Path(alone.out) / "old.parquet"
    pq.write_table(pa.table({"source": ["before.jpg"], "error": [""]}), old)
    both = pd.read_parquet(tmp_path / "results", schema=results_schema(partitioned=True))
    assert pd.isna(both.set_index("source").loc["before.jpg", "status"])
    assert both["status"].notna().sum() == gated.rows + alone.rows


def _manifest(root: Path, fixture_images, kind: str) -> Path:
    """A manifest of paths relative to it (one absolute), with HAM's metadata, and rows that
    must fail: a missing file, an age out of range, an unknown sex; one path twice."""
    meta = pd.read_csv(HAM_FIXTURES / "metadata.csv").set_index("image_id")
    (root / "img").mkdir()
    records = []
    for i, f in enumerate(fixture_images):
        shutil.copy(f, root / "img" / f.name)
        m = meta.loc[f.stem]
        path = str(root / "img" / f.name) if i == 0 else f"img/{f.name}"
        site = m["localization"] if i != 1 else None  # one site left blank
        records.append({"path": path, "age": m["age"], "sex": m["sex"], "site": site})
    records.append({"path": "img/missing.jpg", "age": 50.0, "sex": "male", "site": "back"})
    first = fixture_images[0].name
    records.append({"path": f"img/{first}", "age": 150.0, "sex": "male", "site": "back"})
    records.append({"path": "img/../img/" + first, "age": None, "sex": "other", "site": None})
    records.append(dict(records[2]))  # the same path again: predicted once
    table = pa.Table.from_pylist(records)
    manifest = root / f"manifest.{kind}"
    if kind == "csv":
        pd.DataFrame(records).to_csv(manifest, index=False)
    else:
        pq.write_table(table, manifest)
    return manifest


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_manifest_rows_equal_router_with_metadata(tmp_path, fixture_images, router, kind):
    manifest = _manifest(tmp_path, fixture_images, kind)
    summary = predict_archive(str(manifest), str(tmp_path / "out"), batch_size=3)
    assert (summary.written, summary.rows, summary.errors) == (10, 10, 3)
    got = rows(summary.out)
    meta = pd.read_csv(HAM_FIXTURES / "metadata.csv").set_index("image_id")
    for i, f in enumerate(fixture_images):
        m = meta.loc[f.stem]
        source = str(tmp_path / "img" / f.name) if i == 0 else f"img/{f.name}"
        site = m["localization"] if i != 1 else None
        expected = router.predict(f, age=float(m["age"]), sex=m["sex"], site=site)
        assert_same(got[source], expected, router)
        assert (got[source]["age"], got[source]["sex"]) == (m["age"], m["sex"])
    missing = got["img/missing.jpg"]["error"]
    assert missing == "img/missing.jpg: no such file"
    first = fixture_images[0].name
    assert got[f"img/{first}"]["error"] == f"img/{first}: age: 150.0 is out of range 0-120"
    assert got[f"img/../img/{first}"]["error"].startswith(f"img/../img/{first}: sex: 'other'")


def test_rerun_skips_and_two_bundles_never_mix(tmp_path, fixture_images):
    scans = tmp_path / "scans"
    scans.mkdir()
    for f in fixture_images[:3]:
        shutil.copy(f, scans / f.name)
    out = tmp_path / "results"
    first = predict_archive(scans, out)
    assert (first.written, first.skipped, first.rows) == (3, 0, 3)
    again = predict_archive(scans, out)
    assert (again.written, again.skipped, again.rows, again.actors) == (0, 3, 3, 0)
    shutil.copy(fixture_images[3], scans / fixture_images[3].name)
    more = predict_archive(scans, out)
    assert (more.written, more.skipped, more.rows) == (1, 3, 4)
    assert more.out == first.out and len(rows(first.out)) == 4

    # the same weights recalibrated: same model_version, another bundle, another folder
    other = tmp_path / "recalibrated"
    shutil.copytree(DEFAULT_MODEL, other, ignore=shutil.ignore_patterns("model.pt"))
    info = json.loads((other / "bundle.json").read_text())
    info["temperature"] *= 2
    (other / "bundle.json").write_text(json.dumps(info))
    second = predict_archive(scans, out, model=other)
    assert second.bundle_sha256 != first.bundle_sha256 and second.out != first.out
    assert (second.written, second.skipped, second.rows) == (4, 0, 4)
    ours, theirs = rows(first.out), rows(second.out)
    assert len(ours) == 4 and {r["bundle_sha256"] for r in ours.values()} == {first.bundle_sha256}
    # pinned under the gate, as `dermalens predict --model`: the copy answers, not the
    # installed bundle of the same version
    recalibrated = Router.installed(pin=other, backend="onnx", precision="fp32")
    assert recalibrated.pinned.bundle.path == other
    for source, row in theirs.items():
        assert_same(row, recalibrated.predict(source), recalibrated)
        assert row["model_version"] == ours[source]["model_version"]
        assert row["probabilities"] != pytest.approx(ours[source]["probabilities"])
    both = pd.read_parquet(out)  # one dataset, keyed by the folder name
    assert both.groupby("bundle", observed=True).size().to_dict() == {
        first.bundle_sha256[:16]: 4,
        second.bundle_sha256[:16]: 4,
    }


def test_a_cut_short_results_file_is_set_aside_and_redone(tmp_path, fixture_images):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(fixture_images[0], scans / fixture_images[0].name)
    out = tmp_path / "results"
    first = predict_archive(scans, out)
    [written] = Path(first.out).glob("*.parquet")
    written.write_bytes(written.read_bytes()[:100])  # a write stopped half-way
    again = predict_archive(scans, out)
    assert (again.written, again.skipped, again.rows, again.errors) == (1, 0, 1, 0)
    assert (Path(first.out) / f"_unreadable-{written.name}").is_file()


def test_bad_sources_are_one_sentence(tmp_path, fixture_images):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        predict_archive(tmp_path / "nowhere", out)
    with pytest.raises(DataError, match="not a folder or a manifest"):
        predict_archive(fixture_images[0], out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder holds no images"):
        predict_archive(tmp_path / "empty", out)
    (tmp_path / "m.csv").write_text("image,age\na.jpg,3\n")
    with pytest.raises(DataError, match="the manifest has no 'path' column"):
        predict_archive(tmp_path / "m.csv", out)
    (tmp_path / "ages.csv").write_text("path,age\na.jpg,old\n")
    with pytest.raises(DataError, match="column 'age' is not double"):
        predict_archive(tmp_path / "ages.csv", out)


def test_cli_predict_batch(scans, tmp_path, capsys):
    code = main(["predict-batch", str(scans), "--out", str(tmp_path / "r"), "--top-k", "2"])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, err
    lines = out.splitlines()
    assert lines[0].startswith("model: ham-") and "14 images: 0 already done, 14" in lines[1]
    assert lines[2].startswith(f"results: {tmp_path / 'r'}/bundle=")
    assert lines[2].endswith("(14 rows, 3 with an error)")
    assert lines[3].startswith("scope gate: scope-gate@") and "dermoscopic: ham-" in lines[3]
    assert lines[4].startswith("this run: ") and "3 error" in lines[4] and "not_skin" in lines[4]
    frame = pd.read_parquet(tmp_path / "r")
    assert {len(t) for t in frame["top"][frame["answered_by"].notna()]} == {2}
    assert {len(t) for t in frame["top"][frame["status"].isin(["not_skin", "out_of_scope"])]} == {0}


def test_importing_it_loads_no_ray():
    """The default install has no Ray: the CLI and this module import without it."""
    code = (
        "import sys, dermalens.cli.commands, dermalens.runtime.archive; print('ray' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "False"
