"""PAD-UFES-20 loader: detection by columns, labels, patient groups, clinical fields, problems.

pytest tests/test_pad_ufes.py -q
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermalens.data.check import check_dataset
from dermalens.data.loaders import detect_format, load_dataset
from dermalens.data.pad_ufes import ACK_CODE, CLINICAL, biopsied, load_pad_ufes
from dermalens.data.records import (
    COLUMNS,
    IMAGE_WITHOUT_LABEL,
    LABEL_WITHOUT_IMAGE,
    DataError,
)
from dermalens.data.splits import check_no_leak, grouped_split, load_split, save_split

FIXTURES = Path(__file__).parent / "fixtures"
PAD = FIXTURES / "pad"
PAD_DIR = Path(__file__).parents[1].parent / "shared/data/pad-ufes-20"


@pytest.fixture
def pad(tmp_path: Path) -> Path:
    """A writable copy of the six-image fixture."""
    return Path(shutil.copytree(PAD, tmp_path / "pad"))


def rewrite(root: Path, edit) -> None:
    """Apply `edit` to the copy's metadata.csv (read as text, blanks kept blank)."""
    frame = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    edit(frame)
    frame.to_csv(root / "metadata.csv", index=False)


def test_pad_detected_by_its_columns() -> None:
    assert detect_format(PAD) == "pad_ufes20"
    dataset = load_dataset(PAD)
    assert dataset.source == "pad_ufes20"
    assert len(dataset) == 6
    assert dataset.problems == []


def test_ham_metadata_csv_still_ham() -> None:
    assert detect_format(FIXTURES / "ham") == "ham10000"
    assert load_dataset(FIXTURES / "ham").source == "ham10000"


def test_metadata_csv_of_neither_names_the_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("image,label\nx.png,MEL\n")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path)
    message = str(info.value)
    assert "HAM10000 (missing column(s) ['lesion_id', 'image_id', 'dx'])" in message
    pad_columns = "['patient_id', 'lesion_id', 'img_id', 'diagnostic']"
    assert f"PAD-UFES-20 (missing column(s) {pad_columns})" in message
    assert "found ['image', 'label']" in message


def test_ham10000_named_csv_is_only_ham(tmp_path: Path) -> None:
    shutil.copy(PAD / "metadata.csv", tmp_path / "HAM10000_metadata.csv")
    only_ham = r"neither HAM10000 \(missing column\(s\) \['image_id', 'dx'\]\); found"
    with pytest.raises(DataError, match=only_ham):
        detect_format(tmp_path)


def test_diagnoses_mapped_into_the_taxonomy() -> None:
    table = load_pad_ufes(PAD).table.set_index("image_id")
    assert table["label"].to_dict() == {
        "PAT_263_404_410": ACK_CODE,
        "PAT_1364_1246_420": "nv",
        "PAT_564_1079_430": "bcc",
        "PAT_263_403_966": "scc",
        "PAT_656_1246_483": "mel",
        "PAT_1304_1079_859": "bkl",
    }
    assert table.loc["PAT_263_404_410", "diagnostic"] == "ACK"  # the source's own code, kept


def test_unknown_diagnostic_is_an_error(pad: Path) -> None:
    rewrite(pad, lambda frame: frame.__setitem__("diagnostic", "XYZ"))
    with pytest.raises(DataError, match=r"unknown diagnostic 'XYZ'; expected one of \['ACK'"):
        load_dataset(pad)


def test_standard_columns_and_patient_groups() -> None:
    table = load_pad_ufes(PAD).table.set_index("image_id")
    row = table.loc["PAT_564_1079_430"]
    assert (row["patient_id"], row["age"], row["sex"], row["site"]) == (
        "PAT_564",
        73.0,
        "female",
        "upper extremity",
    )
    assert row["source"] == "pad_ufes20"
    assert table.loc["PAT_1304_1079_859", "site"] == "face"
    assert pd.isna(table.loc["PAT_1364_1246_420", "sex"])  # blank gender: missing
    # Raw lesion 1246 is PAT_656's melanoma and PAT_1364's naevus: two lesions, not one.
    assert table.loc["PAT_656_1246_483", "lesion_id"] == "PAT_656_1246"
    assert table.loc["PAT_1364_1246_420", "lesion_id"] == "PAT_1364_1246"


def test_clinical_fields_are_extra_columns() -> None:
    table = load_pad_ufes(PAD).table
    assert list(table.columns) == [*COLUMNS, *CLINICAL]
    assert {"fitspatrick", "itch", "grew", "hurt", "changed", "bleed", "elevation"} <= set(CLINICAL)
    assert {"diameter_1", "diameter_2", "biopsed", "region", "smoke"} <= set(CLINICAL)
    row = table.set_index("image_id").loc["PAT_263_403_966"]
    assert (row["fitspatrick"], row["diameter_1"], row["diameter_2"]) == (1.0, 15.0, 13.0)
    assert (row["itch"], row["grew"], row["biopsed"], row["cancer_history"]) == (1, 0, 1, 1)
    assert (row["region"], row["background_father"]) == ("CHEST", "POMERANIA")
    blank = table.set_index("image_id").loc["PAT_1304_1079_859"]
    assert math.isnan(blank["fitspatrick"]) and math.isnan(blank["smoke"])
    assert pd.isna(blank["background_father"]) and blank["biopsed"] == 0.0
    unk = table.set_index("image_id").loc["PAT_656_1246_483"]
    assert pd.isna(unk["background_mother"])  # "UNK"


def test_unk_blank_and_odd_values_are_missing_and_reported_once(pad: Path) -> None:
    def edit(frame: pd.DataFrame) -> None:
        frame.loc[0, "grew"] = "UNK"
        frame.loc[1, "itch"] = ""
        frame.loc[2:3, "region"] = "ELBOW"
        frame.loc[4, "fitspatrick"] = "9.0"
        frame.loc[5, "bleed"] = "maybe"

    rewrite(pad, edit)
    dataset = load_pad_ufes(pad)
    table = dataset.table
    assert math.isnan(table.loc[0, "grew"]) and math.isnan(table.loc[1, "itch"])
    assert table.loc[2:3, "site"].isna().all()
    assert list(table.loc[2:3, "region"]) == ["ELBOW", "ELBOW"]
    assert math.isnan(table.loc[4, "fitspatrick"]) and math.isnan(table.loc[5, "bleed"])
    assert dataset.problems == [
        "bleed 'maybe' in 1 row(s): read as missing",
        "fitspatrick '9.0' in 1 row(s): read as missing",
        "region 'ELBOW' in 2 row(s): read as missing (no records.SITES match)",
    ]


def test_biopsied_subset() -> None:
    table = load_pad_ufes(PAD).table
    assert sorted(biopsied(table)["label"]) == sorted([ACK_CODE, "bcc", "mel", "scc"])
    with pytest.raises(DataError, match="no 'biopsed' column"):
        biopsied(load_dataset(FIXTURES / "ham").table)


def many_patients(root: Path, patients: int = 24) -> Path:
    """A PAD folder of `patients` patients with 1-3 images each (copies of the fixture's)."""
    rows = pd.read_csv(PAD / "metadata.csv", dtype=str, keep_default_na=False)
    (root / "images").mkdir(parents=True)
    out = []
    for p in range(patients):
        for k in range(1 + p % 3):
            rec = rows.iloc[(p + k) % len(rows)].to_dict()
            source = PAD / "images" / rec["img_id"]
            rec.update(patient_id=f"PAT_{p}", lesion_id=str(k), img_id=f"PAT_{p}_{k}_1.png")
            shutil.copy(source, root / "images" / rec["img_id"])
            out.append(rec)
    pd.DataFrame(out).to_csv(root / "metadata.csv", index=False)
    return root


def test_a_patients_images_never_split_apart(tmp_path: Path) -> None:
    dataset = load_dataset(many_patients(tmp_path / "pad"))
    assert len(dataset) == 48
    for seed in range(5):
        table = grouped_split(dataset, seed=seed)
        check_no_leak(table)
        assert (table["group"] == table["patient_id"]).all()
        assert table.groupby("patient_id")["split"].nunique().max() == 1
        assert set(table["split"]) == {"train", "val", "test"}
    # A saved split re-attaches to a table with the extra columns.
    save_split(table, tmp_path / "split.csv")
    again = load_split(dataset, tmp_path / "split.csv")
    assert list(again["split"]) == list(table["split"])
    assert set(CLINICAL) <= set(again.columns)


def test_missing_extra_and_unreadable_images_are_reported(pad: Path) -> None:
    (pad / "images" / "PAT_564_1079_430.png").unlink()
    shutil.copy(pad / "images" / "PAT_263_403_966.png", pad / "images" / "PAT_9_9_9.png")
    (pad / "images" / "PAT_656_1246_483.png").write_bytes(b"not a PNG")
    dataset = load_dataset(pad)
    assert len(dataset) == 5
    assert f"{LABEL_WITHOUT_IMAGE}PAT_564_1079_430" in dataset.problems
    assert f"{IMAGE_WITHOUT_LABEL}PAT_9_9_9.png" in dataset.problems
    report = check_dataset(dataset)  # the unreadable file: reported, not fatal
    assert list(report.unreadable) == ["PAT_656_1246_483"]
    assert report.labels_without_images == ["PAT_564_1079_430"]
    assert report.images_without_labels == ["PAT_9_9_9.png"]


def test_evaluate_tolerates_the_extra_columns(pad: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    from dermalens.evaluation.evaluate import evaluate

    result = evaluate(tiny_bundle, pad, out_dir=tmp_path / "eval", progress=False)
    # the SCC and ACK images are not among the HAM model's classes
    assert result.metrics["n"] == 4
    written = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert len(written) == 4 and "p_mel" in written.columns


def test_real_pad_ufes_folder() -> None:
    if not (PAD_DIR / "metadata.csv").is_file():
        pytest.skip(f"PAD-UFES-20 not found at {PAD_DIR}")
    dataset = load_dataset(PAD_DIR)
    counts = {"bcc": 141, "nv": 141, "bkl": 103, "mel": 33, "scc": 18}
    assert dataset.counts() == {**counts, ACK_CODE: 86}
    assert dataset.problems == []
    assert dataset.table["patient_id"].nunique() == 403
    assert dataset.table["site"].notna().all()  # every region in the CSV has a site
