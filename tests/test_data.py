"""Data loaders (HAM10000, ISIC 2019, class folders), data checks and grouped splits.

pytest tests/test_data.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermalens.data.check import CheckReport, check_dataset, check_main, quick_problems
from dermalens.data.dedupe import clusters, near_pairs
from dermalens.data.folders import load_folders
from dermalens.data.isic2019 import GROUND_TRUTH, METADATA, load_isic2019
from dermalens.data.loaders import load_dataset
from dermalens.data.records import DataError, Dataset, make_table
from dermalens.data.splits import check_no_leak, grouped_split

HAM_DIR = Path(__file__).parents[1].parent / "shared/data/ham10000"
ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def picture(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Random pixels, upscaled so the picture has structure a perceptual hash can see."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )


def write_image(path: Path, seed: int, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed).save(path, quality=quality)
    return path


def write_truncated(path: Path, seed: int) -> Path:
    write_image(path, seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --- ISIC 2019 ---------------------------------------------------------------------------


def write_isic(root: Path, labels: dict[str, str], columns: list[str] = ISIC_COLUMNS) -> Path:
    """Ground truth with one 1.0 per row in the column named by `labels[image]`."""
    rows = [
        {"image": image, **{c: float(c == col) for c in columns}} for image, col in labels.items()
    ]
    pd.DataFrame(rows, columns=["image", *columns]).to_csv(root / GROUND_TRUTH, index=False)
    return root / GROUND_TRUTH


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    write_isic(
        tmp_path,
        {
            "ISIC_0000001": "MEL",
            "ISIC_0000002_downsampled": "AK",
            "ISIC_0000003": "NV",
            "ISIC_0000004": "SCC",  # no image on disk
        },
    )
    meta = pd.DataFrame(
        {
            "image": ["ISIC_0000001", "ISIC_0000002_downsampled", "ISIC_0000003"],
            "age_approx": [55.0, None, 30.0],
            "anatom_site_general": ["anterior torso", "head/neck", "palms/soles"],
            "lesion_id": ["BCN_0000001", None, "BCN_0000003"],
            "sex": ["male", "female", None],
        }
    )
    meta.to_csv(tmp_path / METADATA, index=False)
    images = tmp_path / "ISIC_2019_Training_Input"
    write_image(images / "ISIC_0000001_downsampled.jpg", 1)  # suffix on disk only
    write_image(images / "ISIC_0000002.jpg", 2)  # suffix in the CSV only
    write_image(images / "ISIC_0000003.jpg", 3)
    write_image(images / "ISIC_0000009.jpg", 9)  # no label
    return tmp_path


def test_isic2019_loads_labels_metadata_and_downsampled_names(isic_root: Path) -> None:
    data = load_dataset(isic_root)
    assert data.source == "isic2019"
    table = data.table.set_index("image_id")
    assert sorted(table.index) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert table["label"].to_dict() == {
        "ISIC_0000001": "mel",
        "ISIC_0000002": "akiec",
        "ISIC_0000003": "nv",
    }
    assert table.loc["ISIC_0000001", "path"].endswith("ISIC_0000001_downsampled.jpg")
    assert table["site"].to_dict() == {
        "ISIC_0000001": "trunk",
        "ISIC_0000002": "head/neck",
        "ISIC_0000003": "palms/soles",
    }
    assert table.loc["ISIC_0000001", "lesion_id"] == "BCN_0000001"
    assert pd.isna(table.loc["ISIC_0000002", "lesion_id"])
    assert table.loc["ISIC_0000001", "age"] == 55.0
    assert np.isnan(table.loc["ISIC_0000002", "age"])
    assert table.loc["ISIC_0000002", "sex"] == "female"
    assert set(data.problems) == {
        "label without image: ISIC_0000004",
        "image without label: ISIC_0000009.jpg",
    }


@pytest.mark.parametrize("folder", ["ISIC_2019_Training_Input", "images", "."])
def test_isic2019_finds_images_in_each_folder_without_metadata(tmp_path: Path, folder) -> None:
    write_isic(tmp_path, {"ISIC_0000001": "BCC", "ISIC_0000002": "UNK"})
    write_image(tmp_path / folder / "ISIC_0000001.jpg", 1)
    write_image(tmp_path / folder / "ISIC_0000002_downsampled.png", 2)
    data = load_isic2019(tmp_path)
    assert data.counts() == {"bcc": 1, "unk": 1}
    assert data.table["site"].isna().all() and not data.problems


def test_isic2019_missing_column(tmp_path: Path) -> None:
    csv = write_isic(tmp_path, {"ISIC_0000001": "MEL"}, [c for c in ISIC_COLUMNS if c != "UNK"])
    with pytest.raises(DataError, match=rf"{csv}: missing column\(s\) \['UNK'\]"):
        load_isic2019(tmp_path)


def test_isic2019_unknown_label_column(tmp_path: Path) -> None:
    write_isic(tmp_path, {"ISIC_0000001": "MEL"}, [*ISIC_COLUMNS, "XYZ"])
    with pytest.raises(DataError, match="label column 'XYZ': unknown class label 'XYZ'"):
        load_isic2019(tmp_path)


def test_isic2019_duplicate_ids_with_and_without_suffix(tmp_path: Path) -> None:
    write_isic(tmp_path, {"ISIC_0000001": "MEL", "ISIC_0000001_downsampled": "NV"})
    with pytest.raises(DataError, match=r"duplicate image id\(s\) \['ISIC_0000001'\]"):
        load_isic2019(tmp_path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"MEL": 0.0}, "image ISIC_0000002: one-hot row has 0 ones; expected exactly one 1"),
        ({"MEL": 1.0, "NV": 1.0}, "image ISIC_0000002: one-hot row has 2 ones"),
        ({"MEL": 0.5}, "image ISIC_0000002: column MEL is '0.5'; expected 0 or 1"),
        ({"MEL": "yes"}, "image ISIC_0000002: column MEL is 'yes'; expected 0 or 1"),
    ],
)
def test_isic2019_bad_one_hot(tmp_path: Path, row: dict, message: str) -> None:
    csv = write_isic(tmp_path, {"ISIC_0000001": "NV", "ISIC_0000002": "MEL"})
    frame = pd.read_csv(csv, dtype=str)
    for column, value in row.items():
        frame.loc[1, column] = str(value)
    frame.to_csv(csv, index=False)
    with pytest.raises(DataError, match=f"{GROUND_TRUTH}: {message}"):
        load_isic2019(tmp_path)


def test_isic2019_duplicate_metadata_rows(isic_root: Path) -> None:
    meta = pd.read_csv(isic_root / METADATA)
    pd.concat([meta, meta.iloc[:1]]).to_csv(isic_root / METADATA, index=False)
    with pytest.raises(DataError, match=rf"{METADATA}: duplicate image id\(s\) \['ISIC_0000001'\]"):
        load_isic2019(isic_root)


# --- image folders -------------------------------------------------------------------------

MELANOMA = "Melanoma Skin Cancer Nevi and Moles"
ECZEMA = "Eczema Photos"


def test_folders_merges_train_and_test_and_clusters_near_duplicates(tmp_path: Path) -> None:
    write_image(tmp_path / "train" / MELANOMA / "a.jpg", 1, quality=95)
    write_image(tmp_path / "test" / MELANOMA / "a_again.jpg", 1, quality=60)  # near duplicate
    write_image(tmp_path / "train" / MELANOMA / "b.png", 2)
    write_image(tmp_path / "train" / ECZEMA / "c.jpg", 3)
    write_truncated(tmp_path / "test" / ECZEMA / "broken.jpg", 4)
    (tmp_path / "train" / ECZEMA / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path)
    assert data.source == "folders"
    table = data.table.set_index("image_id")
    assert sorted(table.index) == [
        f"test/{MELANOMA}/a_again.jpg",
        f"train/{ECZEMA}/c.jpg",
        f"train/{MELANOMA}/a.jpg",
        f"train/{MELANOMA}/b.png",
    ]
    assert data.counts() == {"eczema": 1, "melanoma_nevi": 3}
    assert table.loc[f"test/{MELANOMA}/a_again.jpg", "source"] == "folders:test"
    assert table.loc[f"train/{MELANOMA}/a.jpg", "source"] == "folders:train"
    lesion = table["lesion_id"]
    assert lesion[f"train/{MELANOMA}/a.jpg"] == lesion[f"test/{MELANOMA}/a_again.jpg"]
    assert lesion.nunique() == 3 and lesion.str.fullmatch(r"cluster-\d+").all()
    assert any(
        p.startswith(f"unreadable image: test/{ECZEMA}/broken.jpg: ") and "truncated" in p
        for p in data.problems
    )
    assert f"not an image file: train/{ECZEMA}/notes.txt" in data.problems


def test_folders_without_parts_and_near_duplicate_split_together(tmp_path: Path) -> None:
    for seed in range(12):
        write_image(tmp_path / ("melanoma" if seed % 2 else "nevus") / f"{seed}.jpg", seed)
    write_image(tmp_path / "nevus" / "0_copy.jpg", 0, quality=50)
    data = load_folders(tmp_path)
    assert set(data.table["source"]) == {"folders"}
    assert data.counts() == {"mel": 6, "nv": 7}
    table = data.table.set_index("image_id")
    assert table.loc["nevus/0.jpg", "lesion_id"] == table.loc["nevus/0_copy.jpg", "lesion_id"]
    split = grouped_split(data, seed=3).set_index("image_id")["split"]
    assert split["nevus/0.jpg"] == split["nevus/0_copy.jpg"]


def test_folders_unknown_class_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "Melanomma" / "a.jpg", 1)
    with pytest.raises(
        DataError,
        match=r"class folder 'Melanomma' is not a known class: add an alias for 'melanomma' "
        r"to dermalens.taxonomy.ALIASES; close matches: \['melanoma'",
    ):
        load_folders(tmp_path)


def test_folders_without_readable_images(tmp_path: Path) -> None:
    (tmp_path / "nevus").mkdir()
    (tmp_path / "nevus" / "x.jpg").write_text("not a jpeg")
    with pytest.raises(DataError, match=r"no readable images in 1 class folder\(s\)"):
        load_folders(tmp_path)


# --- checks --------------------------------------------------------------------------------


@pytest.fixture
def ham_root(tmp_path: Path) -> Path:
    """A HAM10000-shaped set with one of each problem the check must find."""
    images = tmp_path / "images"
    rows = []
    for i in range(6):
        write_image(images / f"ISIC_{i}.jpg", i)
        rows.append((f"HAM_{i}", f"ISIC_{i}", "nv" if i % 2 else "mel"))
    shutil.copy(images / "ISIC_0.jpg", images / "ISIC_10.jpg")  # exact duplicate of ISIC_0
    write_image(images / "ISIC_11.jpg", 1, quality=40)  # near duplicate of ISIC_1
    write_truncated(images / "ISIC_12.jpg", 12)
    (images / "ISIC_13.jpg").write_text("this is not a JPEG")
    write_image(images / "ISIC_14.jpg", 14)  # no metadata row
    rows += [("HAM_10", "ISIC_10", "mel"), ("HAM_11", "ISIC_11", "nv")]
    rows += [("HAM_12", "ISIC_12", "bkl"), ("HAM_13", "ISIC_13", "df"), ("HAM_15", "ISIC_15", "nv")]
    frame = pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx"])
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    return tmp_path


def test_check_dataset_finds_every_problem(ham_root: Path) -> None:
    report = check_dataset(ham_root)
    assert report.images == 10
    assert report.counts == {"bkl": 1, "df": 1, "mel": 4, "nv": 4}
    assert set(report.unreadable) == {"ISIC_12", "ISIC_13"}
    assert "truncated or corrupt image" in report.unreadable["ISIC_12"]
    assert "not an image (unrecognised format)" in report.unreadable["ISIC_13"]
    assert report.exact_duplicates == [["ISIC_0", "ISIC_10"]]
    assert report.exact_cross_lesion == 1
    assert report.near_duplicates == [["ISIC_1", "ISIC_11"]]
    assert report.near_cross_lesion == 1
    assert report.labels_without_images == ["ISIC_15"]
    assert report.images_without_labels == ["ISIC_14.jpg"]
    assert not report.ok
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False
    text = report.to_text()
    assert "Unreadable or truncated images: 2" in text
    assert "Exact duplicates: 1 groups, 1 spanning more than one lesion" in text
    assert "Near duplicates (phash and dhash distance <= 4): 1 groups, 1 spanning" in text
    assert "NOT OK" in text


def test_quick_problems_still_drops_unreadable_and_duplicates(ham_root: Path) -> None:
    table = load_dataset(ham_root).table
    assert quick_problems(table) == {"ISIC_12", "ISIC_13", "ISIC_10"}


def test_check_dataset_of_folders_reports_skipped_files(tmp_path: Path) -> None:
    write_image(tmp_path / "nevus" / "a.jpg", 1)
    write_truncated(tmp_path / "nevus" / "b.jpg", 2)
    (tmp_path / "nevus" / "c.txt").write_text("x")
    report = check_dataset(tmp_path)
    assert report.images == 1 and list(report.unreadable) == ["nevus/b.jpg"]
    assert report.other_problems == ["not an image file: nevus/c.txt"]


def test_check_main_exit_codes_and_json(ham_root: Path, tmp_path: Path, capsys) -> None:
    assert check_main(str(ham_root), as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["unreadable"].keys() == {"ISIC_12", "ISIC_13"}
    for name in ("ISIC_12", "ISIC_13"):
        (ham_root / "images" / f"{name}.jpg").unlink()
    assert check_main(str(ham_root), as_json=False) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
    assert check_main(str(tmp_path / "nowhere"), as_json=False) == 2
    assert "no such dataset folder" in capsys.readouterr().err


def test_near_pairs_and_clusters_are_transitive() -> None:
    hashes = [0b0, 0b1111, 0b1111_1111, 2**64 - 1, 2**64 - 2]
    assert near_pairs(hashes, 4, block=2) == [(0, 1), (1, 2), (3, 4)]
    assert clusters(5, near_pairs(hashes, 4)) == [0, 0, 0, 1, 1]
    assert clusters(3, []) == [0, 1, 2]


def test_check_report_text_lists_at_most_ten_items() -> None:
    report = CheckReport("r", "s", 0, {}, labels_without_images=[f"x{i}" for i in range(12)])
    assert "  ... and 2 more" in report.to_text()


# --- splits --------------------------------------------------------------------------------


def synthetic(lesions_per_class: int = 40, seed: int = 0) -> Dataset:
    """Lesions of 1-5 images each over three classes; no files needed for splitting."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in ("mel", "nv", "bcc"):
        for lesion in range(lesions_per_class):
            for image in range(int(rng.integers(1, 6))):
                rows.append(
                    {
                        "image_id": f"{label}_{lesion}_{image}",
                        "path": "unused.jpg",
                        "label": label,
                        "lesion_id": f"{label}_lesion_{lesion}",
                    }
                )
    return Dataset(make_table(rows), Path("."), "synthetic", [])


def test_grouped_split_keeps_lesions_whole_stratified_and_seeded() -> None:
    data = synthetic()
    table = grouped_split(data, seed=7)
    check_no_leak(table)
    assert (table.groupby("lesion_id")["split"].nunique() == 1).all()
    for label in ("mel", "nv", "bcc"):
        assert set(table.loc[table["label"] == label, "split"]) == {"train", "val", "test"}
    share = table["split"].value_counts(normalize=True)
    assert 0.6 < share["train"] < 0.8
    again = grouped_split(data, seed=7)
    assert table["split"].equals(again["split"])
    assert not table["split"].equals(grouped_split(data, seed=8)["split"])


def test_check_no_leak_rejects_a_group_in_two_splits() -> None:
    table = grouped_split(synthetic())
    table.loc[table.index[0], "split"] = "test" if table["split"].iloc[0] != "test" else "val"
    with pytest.raises(DataError, match="groups in more than one split"):
        check_no_leak(table)


@pytest.mark.skipif(not HAM_DIR.is_dir(), reason=f"{HAM_DIR} not present")
def test_real_ham10000_loads_and_splits_by_lesion() -> None:
    data = load_dataset(HAM_DIR)
    assert len(data) == 8788 and data.source == "ham10000"
    assert data.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    table = grouped_split(data)
    check_no_leak(table)
    assert (table.groupby("lesion_id")["split"].nunique() == 1).all()
