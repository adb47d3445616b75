"""`dermalens predict` on bad inputs, as a new user meets them: every bad file gets one
`error: <file>: <sentence>` line on stderr and no traceback, the good files beside it still
get their answer, and the exit code is 1 when any input failed (0 only when all succeeded).

Runs on the bundled default model: pytest -q tests/test_cli_inputs.py
"""

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from dermalens.cli import main

# file name in the corpus -> how its error line goes on after "error: <path>: "
BAD = {
    "cut_0.jpg": "empty file (0 bytes)",
    "cut_2.jpg": "not an image (unrecognised format)",
    "cut_300.jpg": "truncated or corrupt image (Truncated File Read)",
    "cut_half.jpg": "truncated or corrupt image (image file is truncated",
    "cut_end10.jpg": "truncated or corrupt image (image file is truncated",
    "notes.jpg": "not an image (unrecognised format)",
    "huge.png": "image is 10000x10000 = 100,000,000 pixels, over the limit of 40,000,000 pixels",
}
GOOD = ("good_a.jpg", "good_b.jpg")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixture_images) -> Path:
    """One folder holding every kind of bad input next to two good images."""
    root = tmp_path_factory.mktemp("inputs")
    data = fixture_images[0].read_bytes()
    for name, end in [("0", 0), ("2", 2), ("300", 300), ("half", len(data) // 2)]:
        (root / f"cut_{name}.jpg").write_bytes(data[:end])
    (root / "cut_end10.jpg").write_bytes(data[:-10])
    (root / "notes.jpg").write_text("meeting notes, not a picture\n")
    (root / "x.jpg").mkdir()  # a folder with an image's name: not an input inside a folder
    start = time.perf_counter()
    Image.new("1", (10_000, 10_000), 1).save(root / "huge.png")  # 100 MP in about 12 kB
    assert time.perf_counter() - start < 2.0
    (root / GOOD[0]).write_bytes(data)
    (root / GOOD[1]).write_bytes(fixture_images[1].read_bytes())
    return root


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_alone_is_one_error_line_and_exit_1(corpus, capsys, name):
    code, out, err = predict(capsys, str(corpus / name))
    assert code == 1
    [line] = error_lines(err)
    assert line.startswith(f"error: {corpus / name}: {BAD[name]}")
    assert "1 of 1 inputs failed" in err
    assert "triage:" not in out


def test_missing_path_alone(tmp_path, capsys):
    code, out, err = predict(capsys, str(tmp_path / "missing.jpg"))
    assert code == 1
    assert error_lines(err) == [f"error: {tmp_path / 'missing.jpg'}: no such file or folder"]


def test_folder_named_like_an_image_alone(corpus, capsys):
    code, out, err = predict(capsys, str(corpus / "x.jpg"))
    assert code == 1
    [line] = error_lines(err)
    assert line.startswith(f"error: {corpus / 'x.jpg'}: folder holds no images (.jpg, ")


def test_good_images_in_a_bad_folder_still_get_their_answer(corpus, tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    # the missing path comes first: it must not stop the run before it starts
    code, out, err = predict(capsys, str(missing), str(corpus), "--format", "json")
    assert code == 1
    lines = error_lines(err)
    assert lines[0] == f"error: {missing}: no such file or folder"
    for name, words in BAD.items():
        [line] = [x for x in lines if x.startswith(f"error: {corpus / name}: ")]
        assert line.startswith(f"error: {corpus / name}: {words}")
    assert len(lines) == len(BAD) + 1  # the sub-folder x.jpg is no input: no line for it
    assert "x.jpg" not in err
    assert f"{len(BAD) + 1} of {len(BAD) + 1 + len(GOOD)} inputs failed" in err
    answers = json.loads(out)
    assert sorted(a["source"] for a in answers) == [str(corpus / g) for g in GOOD]
    for answer in answers:
        assert answer["triage"] and abs(sum(answer["probabilities"]) - 1) < 1e-4


def test_table_output_keeps_the_good_answers(corpus, capsys):
    code, out, err = predict(capsys, str(corpus / "cut_300.jpg"), str(corpus / GOOD[0]))
    assert code == 1
    assert error_lines(err) == [f"error: {corpus / 'cut_300.jpg'}: {BAD['cut_300.jpg']}"]
    assert f"{corpus / GOOD[0]}\n" in out and "triage:" in out


def test_all_good_inputs_exit_0(corpus, capsys):
    code, out, err = predict(capsys, *(str(corpus / g) for g in GOOD), "--format", "csv")
    assert code == 0
    assert error_lines(err) == [] and "failed" not in err
    assert len(out.strip().splitlines()) == 1 + len(GOOD)  # header + one row each
