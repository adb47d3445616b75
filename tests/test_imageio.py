"""The input-type matrix: every way a user hands us an image, and the ways it goes wrong."""

import io

import numpy as np
import pytest
from PIL import Image

from dermalens.imageio import ImageError, load_image
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
