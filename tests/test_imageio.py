"""The input-type matrix: every way a user hands us an image, and the ways it goes wrong."""

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from dermalens.imageio import ImageError, find_images, iter_images, load_image
from dermalens.preprocess import Preprocessing, to_input


@pytest.fixture
def photo(fixture_images):
    return Image.open(fixture_images[0]).convert("RGB")


def _bytes(image, fmt, **kw):
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def test_path_bytes_pil_and_array_agree(fixture_images, photo):
    pre = Preprocessing()
    path = fixture_images[0]
    ref = to_input(path, pre)
    assert ref.shape == (3, 150, 200) and ref.dtype == np.float32
    np.testing.assert_allclose(to_input(str(path), pre), ref)
    np.testing.assert_allclose(to_input(path.read_bytes(), pre), ref)
    np.testing.assert_allclose(to_input(photo, pre), ref)
    np.testing.assert_allclose(to_input(np.asarray(photo), pre), ref)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_modes_become_rgb(photo, mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257)
        data = _bytes(image, "PNG")
    elif mode == "CMYK":
        data = _bytes(photo.convert("CMYK"), "JPEG")
    else:
        data = _bytes(photo.convert(mode), "PNG")
    out = load_image(data)
    assert out.mode == "RGB" and out.size == photo.size
    if mode == "I;16":  # 16-bit scaled back to the same 8-bit grey levels
        grey = np.asarray(photo.convert("L"), dtype=int)
        assert np.abs(np.asarray(out)[..., 0].astype(int) - grey).max() <= 1


def test_exif_rotation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_bytes(photo, "JPEG", exif=exif))
    assert out.size == (photo.height, photo.width)


def test_rgba_transparent_becomes_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert np.asarray(load_image(_bytes(image, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_truncated_jpeg_is_an_error(fixture_images):
    data = fixture_images[0].read_bytes()
    with pytest.raises(ImageError, match="truncated or corrupt image"):
        load_image(data[: len(data) // 2])


def test_empty_and_non_image(tmp_path):
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)"):
        load_image(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match=r"notes.txt: not an image \(unrecognised format\)"):
        load_image(text)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_pixel_limit_checked_before_decoding():
    big = _bytes(Image.new("RGB", (4000, 3000)), "PNG")
    with pytest.raises(
        ImageError, match=r"4000x3000 = 12,000,000 pixels, over the limit of 1,000,000"
    ):
        load_image(big, max_pixels=1_000_000)


def test_bad_array_shape():
    with pytest.raises(ImageError, match=r"array of shape \(2, 3, 5\)"):
        load_image(np.zeros((2, 3, 5)))


def test_large_and_portrait_inputs_resize_to_model_size(photo):
    pre = Preprocessing()
    big = photo.resize((1600, 1200))
    assert to_input(_bytes(big, "JPEG"), pre).shape == (3, 150, 200)
    assert to_input(photo.rotate(90, expand=True), pre).shape == (3, 150, 200)


def test_normalisation_matches_description(photo):
    pre = Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
    x = to_input(photo, pre)
    raw = np.asarray(photo, dtype=np.float32)[0, 0]
    np.testing.assert_allclose(x[:, 0, 0], (raw - 127) / 128)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (2, r"not an image \(unrecognised format\)"),
        (300, r"truncated or corrupt image \(Truncated File Read\)"),
        (0.5, r"truncated or corrupt image \(image file is truncated"),
        (-10, r"truncated or corrupt image \(image file is truncated"),
    ],
)
def test_jpeg_cut_anywhere_is_an_image_error_naming_the_file(
    fixture_images, tmp_path, cut, message
):
    data = fixture_images[0].read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:end])
    with pytest.raises(ImageError, match=rf"cut.jpg: {message}"):
        load_image(path)
    with pytest.raises(ImageError, match=message):  # the same from bytes
        load_image(data[:end])


@pytest.mark.parametrize(
    "error",
    [
        SyntaxError("broken PNG file"),
        ValueError("tile cannot extend outside image"),
        struct.error("unpack requires a buffer of 4 bytes"),
        EOFError(),
        OSError("decoder error -2"),
        Image.DecompressionBombError("too many pixels"),
    ],
)
def test_every_decoder_failure_becomes_an_image_error(fixture_images, monkeypatch, error):
    def fail(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(ImageError, match=rf"{fixture_images[0].name}: ") as caught:
        load_image(fixture_images[0])
    assert caught.value.__cause__ is error
    assert str(error) in str(caught.value) or type(error).__name__ in str(caught.value)


def test_header_errors_on_open_become_image_errors(fixture_images, monkeypatch):
    def fail(fp, *args, **kwargs):
        raise OSError("Truncated File Read")

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(ImageError, match=r"truncated or corrupt image \(Truncated File Read\)"):
        load_image(fixture_images[0])


def test_folder_empty_file_and_fifo_paths(tmp_path):
    (tmp_path / "scan.jpg").mkdir()
    with pytest.raises(ImageError, match=r"scan.jpg: is a folder, not an image"):
        load_image(tmp_path / "scan.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    if hasattr(os, "mkfifo"):  # reading a FIFO would block for ever
        os.mkfifo(tmp_path / "pipe.jpg")
        with pytest.raises(ImageError, match=r"pipe.jpg: not a regular file"):
            load_image(tmp_path / "pipe.jpg")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_unreadable_file_is_an_image_error(fixture_images, tmp_path):
    path = tmp_path / "locked.jpg"
    path.write_bytes(fixture_images[0].read_bytes())
    path.chmod(0)
    with pytest.raises(ImageError, match=r"locked.jpg: cannot be read \(permission denied\)"):
        load_image(path)


def test_pixel_limit_names_the_file(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 MP in 12 kB
    with pytest.raises(
        ImageError,
        match=r"huge.png: image is 10000x10000 = 100,000,000 pixels, over the limit of 40,000,000",
    ):
        load_image(path)


def test_iter_images_skips_folders_named_like_images(fixture_images, tmp_path):
    (tmp_path / "sub" / "deeper.jpg").mkdir(parents=True)
    (tmp_path / "sub" / "b.JPG").write_bytes(fixture_images[0].read_bytes())
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("skip me")
    assert iter_images([tmp_path]) == [tmp_path / "a.png", tmp_path / "sub" / "b.JPG"]
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file or folder"):
        iter_images([tmp_path, tmp_path / "missing.jpg"])


def test_find_images_keeps_what_yields_no_image_with_the_reason(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    found = find_images([tmp_path / "missing.jpg", tmp_path / "a.png", tmp_path / "empty"])
    assert [path for path, _ in found] == [
        tmp_path / "missing.jpg",
        tmp_path / "a.png",
        tmp_path / "empty",
    ]
    assert found[0][1] == f"{tmp_path / 'missing.jpg'}: no such file or folder"
    assert found[1][1] == ""
    assert found[2][1].startswith(f"{tmp_path / 'empty'}: folder holds no images (.jpg, ")
