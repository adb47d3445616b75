"""Open class folders: any folder name loads as a class, classes.csv declares codes, names and
malignant flags, and photos filed under two or more folders are dropped and reported.

pytest tests/test_class_folders.py -q
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermalens.data.check import check_dataset
from dermalens.data.folders import load_folders
from dermalens.data.records import DataError
from dermalens.data.splits import check_no_leak, grouped_split
from dermalens.taxonomy import display_name, is_malignant, open_code

SWEET = "Acute febrile neutrophilic dermatosis (Sweet syndrome)"
NAMES = [SWEET, "Birt-Hogg-Dubé syndrome", "Henoch–Schönlein purpura", "Melanoma"]


def write_image(path: Path, seed: int, quality: int = 95, size=(64, 48)) -> Path:
    """Random pixels, upscaled so a perceptual hash sees structure."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC).save(path, quality=quality)
    return path


def write_set(root: Path, names=NAMES, per_class: int = 3) -> Path:
    for k, name in enumerate(names):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", 100 * k + i)
    return root


def test_open_class_codes_names_and_unknown_malignancy(tmp_path: Path) -> None:
    data = load_folders(write_set(tmp_path))
    sweet = "acute_febrile_neutrophilic_dermatosis_sweet_syndrome"
    assert data.counts() == {
        sweet: 3,
        "birt_hogg_dube_syndrome": 3,
        "henoch_schonlein_purpura": 3,
        "mel": 3,
    }
    assert display_name(sweet) == SWEET and is_malignant(sweet) is None
    assert display_name("birt_hogg_dube_syndrome") == "Birt-Hogg-Dubé syndrome"
    assert is_malignant("mel") is True and display_name("mel") == "Melanoma"
    assert is_malignant("no_such_class_anywhere") is None
    assert open_code("Ünïcôdé (x)") == "unicode_x"
    assert open_code("乾癬").startswith("class_") and len(open_code("乾癬")) == 14
    assert data.problems == []


def test_typo_of_a_known_name_is_refused_unless_declared(tmp_path: Path) -> None:
    write_image(tmp_path / "Melanomma" / "a.jpg", 1)
    with pytest.raises(DataError, match=r"close matches: \['melanoma'.*list it in classes.csv"):
        load_folders(tmp_path)
    (tmp_path / "classes.csv").write_text("folder,code,name,malignant\nMelanomma,,,\n")
    assert load_folders(tmp_path).counts() == {"melanomma": 1}


def test_classes_csv_declares_codes_names_flags_and_merges(tmp_path: Path) -> None:
    write_set(tmp_path, ["Psoriasis", "Facial psoriasis", SWEET, "Oral lesion"], per_class=2)
    (tmp_path / "classes.csv").write_text(
        "folder,code,name,malignant\n"
        "Facial psoriasis,psoriasis,,\n"
        f'"{SWEET}",sweet,Sweet syndrome,no\n'
        "Oral lesion,oral_x,Oral thing,yes\n"
    )
    data = load_folders(tmp_path)
    assert data.counts() == {"oral_x": 2, "psoriasis": 4, "sweet": 2}
    assert display_name("sweet") == "Sweet syndrome" and is_malignant("sweet") is False
    assert display_name("oral_x") == "Oral thing" and is_malignant("oral_x") is True


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("folder,code,name\nPsoriasis,p,P\n", r"classes.csv: missing column 'malignant'"),
        (
            "folder,code,name,malignant\nPsoriasis,,,\nPsoraisis x,,,\n",
            r"classes.csv: row 3, column folder: no class folder named 'Psoraisis x'",
        ),
        (
            "folder,code,name,malignant\nPsoriasis,,,maybe\n",
            r"classes.csv: row 2, column malignant: 'maybe' is not one of yes/no",
        ),
        (
            "folder,code,name,malignant\nPsoriasis,px,Psoriasis,no\nFacial psoriasis,px,F,yes\n",
            r"classes.csv: row 3, column code: duplicate code 'px' \(row 2\)",
        ),
        (
            "folder,code,name,malignant\nPsoriasis,Pso Riasis,,\n",
            r"row 2, column code: 'Pso Riasis' is not a code; write 'pso_riasis'",
        ),
        (
            "folder,code,name,malignant\nPsoriasis,mel,,no\n",
            r"row 2: code 'mel' is the taxonomy's 'Melanoma'",
        ),
    ],
)
def test_classes_csv_errors_name_row_and_column(tmp_path: Path, csv_text, message) -> None:
    write_set(tmp_path, ["Psoriasis", "Facial psoriasis"], per_class=1)
    (tmp_path / "classes.csv").write_text(csv_text)
    with pytest.raises(DataError, match=message):
        load_folders(tmp_path)


def test_photo_in_two_folders_is_dropped_and_reported(tmp_path: Path) -> None:
    write_set(tmp_path, ["Psoriasis", "Facial psoriasis"], per_class=3)
    shutil.copy(tmp_path / "Psoriasis" / "0.jpg", tmp_path / "Facial psoriasis" / "copy.jpg")
    data = load_folders(tmp_path)
    assert "Psoriasis/0.jpg" not in set(data.table["image_id"])
    assert data.counts() == {"facial_psoriasis": 3, "psoriasis": 2}
    assert data.problems == [
        'conflicting labels, exact copies: ["Facial psoriasis/copy.jpg", "Psoriasis/0.jpg"]'
    ]
    report = check_dataset(data)
    assert report.conflicting_exact == [["Facial psoriasis/copy.jpg", "Psoriasis/0.jpg"]]
    assert report.other_problems == []
    text = report.to_text()
    assert (
        "Conflicting labels: 1 photos in 2+ class folders (1 as exact copies, 0 as near copies "
        "across folders), 2 images, dropped: kept under none of their folders"
    ) in text
    assert "Tiny classes (fewer than 10 images): 2" in text


def test_near_copy_across_folders_is_one_group_and_dropped(tmp_path: Path) -> None:
    write_set(tmp_path, ["Tinea corporis", "Tinea cruris"], per_class=3)
    # the same photo resized and recompressed, filed under the other folder
    write_image(tmp_path / "Tinea cruris" / "near.jpg", 0, quality=40, size=(96, 72))
    data = load_folders(tmp_path)
    assert data.counts() == {"tinea_corporis": 2, "tinea_cruris": 3}
    report = check_dataset(data)
    assert report.conflicting_near == [["Tinea corporis/0.jpg", "Tinea cruris/near.jpg"]]
    assert report.conflicting_exact == []


def test_grouped_split_keeps_a_near_copy_cluster_on_one_side(tmp_path: Path) -> None:
    write_set(tmp_path, ["Tinea corporis", "Lichen planus (oral)"], per_class=10)
    write_image(tmp_path / "Tinea corporis" / "near.jpg", 3, quality=40, size=(96, 72))
    data = load_folders(tmp_path)
    table = data.table.set_index("image_id")
    near = table.loc[["Tinea corporis/3.jpg", "Tinea corporis/near.jpg"], "lesion_id"]
    assert near.nunique() == 1 and table["lesion_id"].nunique() == 20
    for seed in range(5):
        split = grouped_split(data, seed=seed)
        check_no_leak(split)
        sides = split.set_index("image_id").loc[near.index, "split"]
        assert sides.nunique() == 1


def test_a_class_whose_every_photo_conflicts_is_reported(tmp_path: Path) -> None:
    write_set(tmp_path, ["Purpura"], per_class=3)
    (tmp_path / "Henoch–Schönlein purpura").mkdir()
    shutil.copy(tmp_path / "Purpura" / "1.jpg", tmp_path / "Henoch–Schönlein purpura" / "a.jpg")
    data = load_folders(tmp_path)
    assert data.counts() == {"purpura": 2}
    report = check_dataset(data)
    assert report.other_problems == [
        "class folder emptied by the conflict rule (all its photos are in other folders too): "
        "Henoch–Schönlein purpura"
    ]
