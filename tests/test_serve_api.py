"""REST API through TestClient: exact status codes and messages, every image mode, feedback.

nice -n 10 pytest tests/test_serve_api.py -q
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dermalens.data.records import SITES
from dermalens.runtime.predictor import DISCLAIMER, Predictor
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings
from dermalens.taxonomy import HAM10000_CLASSES

TOKEN = "test-token-123"
LIMIT = 200_000  # MAX_UPLOAD_BYTES for these tests


@pytest.fixture(scope="module")
def settings(tiny_bundle, tmp_path_factory) -> Settings:
    return Settings(
        model=tiny_bundle,
        data_dir=tmp_path_factory.mktemp("serve-data"),
        api_token=TOKEN,
        max_upload_bytes=LIMIT,
        max_pixels=1_000_000,
    )


@pytest.fixture(scope="module")
def client(settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def jpeg(fixture_images) -> bytes:
    return fixture_images[0].read_bytes()


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def post(client, data: bytes, name: str = "lesion.jpg", query: str = "", **form):
    files = {"file": (name, data, "application/octet-stream")}
    return client.post(f"/api/v1/predictions{query}", files=files, data=form)


def test_prediction_has_top_k_triage_heatmap_and_timings(client, jpeg, tiny_bundle):
    response = post(client, jpeg, age="55", sex="female", site="back")
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"].endswith(f"/api/v1/predictions/{body['id']}")
    assert len(body["id"]) == 32
    assert body["model"]["name"] == "tiny"
    assert body["model"]["version"].startswith("tiny@")
    assert [c["code"] for c in body["top"]] == sorted(
        body["probabilities"], key=body["probabilities"].get, reverse=True
    )[:3]
    assert list(body["probabilities"]) == list(HAM10000_CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["top"][0]["name"] and isinstance(body["top"][0]["malignant"], bool)
    assert body["triage"]["result"] in ("benign", "malignant", "uncertain")
    assert body["triage"]["rule"].startswith("malignant if P(malignant classes) >= ")
    assert body["uncertain"] == (body["top"][0]["probability"] < 0.5)
    assert body["patient"] == {"age": 55.0, "sex": "female", "site": "back", "clinical": {}}
    assert body["image_kept"] is False
    assert body["disclaimer"] == DISCLAIMER
    assert {"decode", "preprocess", "inference", "heatmap", "overlay", "total"} <= set(
        body["timings_ms"]
    )
    heatmap = body["heatmap"]
    assert heatmap["target"] == body["top"][0]["code"]
    assert heatmap["image"].startswith("data:image/png;base64,")
    png = Image.open(io.BytesIO(base64.b64decode(heatmap["image"].split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (480, 384)  # the model's 80x64 crop, scaled


def test_api_gives_the_same_probabilities_as_the_library(client, fixture_images, tiny_bundle):
    predictor = Predictor(tiny_bundle, backend="onnx")
    for path in fixture_images[:3]:
        body = post(client, path.read_bytes()).json()
        expected = predictor.predict(path).probabilities
        assert list(body["probabilities"].values()) == pytest.approx(expected, abs=1e-9)


def test_explain_false_skips_the_heatmap_and_top_k_is_honoured(client, jpeg):
    body = post(client, jpeg, query="?explain=false&top_k=5").json()
    assert body["heatmap"] is None
    assert len(body["top"]) == 5


def test_get_returns_what_was_returned(client, jpeg):
    created = post(client, jpeg, age="40").json()
    response = client.get(f"/api/v1/predictions/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {**created, "heatmap": None}


def test_unknown_prediction_is_404(client):
    response = client.get("/api/v1/predictions/0123abcd")
    assert response.status_code == 404
    assert response.json() == {"detail": "prediction '0123abcd' not found"}


def test_non_image_is_415(client):
    response = post(client, b"%PDF-1.4 not really an image", name="report.pdf")
    assert response.status_code == 415
    assert response.json() == {
        "detail": "not an image (unrecognised format); "
        "send a JPEG, PNG, WebP, BMP, TIFF or GIF file"
    }


def test_zero_byte_file_is_400(client):
    response = post(client, b"")
    assert response.status_code == 400
    assert response.json() == {"detail": "empty file (0 bytes)"}


def test_truncated_file_is_400(client, jpeg):
    response = post(client, jpeg[: len(jpeg) // 2])
    assert response.status_code == 400
    assert response.json()["detail"].startswith("truncated or corrupt image (")


def test_file_over_max_upload_bytes_is_413(client):
    response = post(client, b"\xff" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {
        "detail": "file is over the upload limit of 200,000 bytes (MAX_UPLOAD_BYTES)"
    }


def test_body_far_over_the_limit_is_refused_before_reading(client):
    response = post(client, b"\xff" * (LIMIT + 100_000))
    assert response.status_code == 413
    assert response.json()["detail"].endswith(
        "over the upload limit of 200,000 bytes (MAX_UPLOAD_BYTES)"
    )
    assert response.json()["detail"].startswith("request body is ")


def test_image_over_max_pixels_is_413(client):
    big = encode(Image.new("L", (1200, 1000)))  # 1.2 MP, a few kB
    response = post(client, big, name="big.png")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "image is 1200x1000 = 1,200,000 pixels, over the limit of 1,000,000 pixels "
        "(MAX_PIXELS)"
    }


def png_header_only(width: int, height: int) -> bytes:
    """A decompression bomb's calling card: a PNG whose header claims a huge size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_before_decoding(client):
    response = post(client, png_header_only(100_000, 100_000), name="bomb.png")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "image is 100000x100000 = 10,000,000,000 pixels, over the limit of "
        "1,000,000 pixels (MAX_PIXELS)"
    }


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"age": "130"}, "age: 130.0 is out of range 0-120"),
        ({"age": "-1"}, "age: -1.0 is out of range 0-120"),
        ({"age": "old"}, "age: Input should be a valid number, unable to parse string as a number"),
        ({"site": "elbow"}, f"site: 'elbow' is not one of {list(SITES)}"),
        ({"sex": "x"}, "sex: 'x' is not one of ['male', 'female']"),
        ({"clinical": '{"itch": "often"}'}, "itch: 'often' is not yes/no"),
        (
            {"clinical": '{"biopsed": true}'},
            "unknown clinical field(s) ['biopsed']: choose from "
            "['fitzpatrick', 'itch', 'grew', 'hurt', 'changed', 'bleed', 'elevation', "
            "'diameter_1', 'diameter_2']",
        ),
        ({"clinical": "itch"}, "clinical: 'itch' is not JSON"),
    ],
)
def test_bad_patient_fields_are_422_naming_the_field(client, jpeg, form, detail):
    response = post(client, jpeg, **form)
    assert response.status_code == 422
    assert response.json()["detail"] == detail


def test_missing_file_is_422(client):
    response = client.post("/api/v1/predictions", data={"age": "40"})
    assert response.status_code == 422
    assert response.json()["detail"] == "file: Field required"


def test_patient_fields_are_normalised(client, jpeg):
    body = post(client, jpeg, sex=" Male ", site="Lower Extremity", age="").json()
    assert body["patient"] == {
        "age": None,
        "sex": "male",
        "site": "lower extremity",
        "clinical": {},
    }


def test_clinical_fields_are_read_and_echoed(client, jpeg):
    body = post(client, jpeg, clinical='{"itch": "yes", "diameter_1": 6, "bleed": null}').json()
    assert body["patient"]["clinical"] == {"itch": 1.0, "diameter_1": 6.0, "bleed": None}


def cmyk_jpeg(rgb: Image.Image) -> bytes:
    return encode(rgb.convert("CMYK"), "JPEG", quality=95)


def sixteen_bit_png(rgb: Image.Image) -> bytes:
    gray = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(gray)
    assert image.mode == "I;16"
    return encode(image)


@pytest.mark.parametrize(
    "make",
    [
        lambda im: encode(im.convert("L")),
        lambda im: encode(im.convert("RGBA")),
        lambda im: encode(im.convert("LA")),
        lambda im: encode(im.convert("P", palette=Image.Palette.ADAPTIVE)),
        lambda im: encode(im.convert("1")),
        lambda im: encode(im, "WEBP", lossless=True),
        lambda im: encode(im, "BMP"),
        lambda im: encode(im, "TIFF"),
        lambda im: encode(im, "GIF"),
        cmyk_jpeg,
        sixteen_bit_png,
    ],
    ids=["gray", "rgba", "la", "palette", "1bit", "webp", "bmp", "tiff", "gif", "cmyk", "16bit"],
)
def test_every_image_mode_is_accepted(client, fixture_images, make):
    response = post(client, make(Image.open(fixture_images[1]).convert("RGB")), name="x")
    assert response.status_code == 201, response.json()
    body = response.json()
    if body["status"] == "not_skin":  # the scope gate: greyscale modes are not skin photos
        assert "greyscale" in body["scope"]["rule"] and body["probabilities"] == {}
    else:
        assert sum(body["probabilities"].values()) == pytest.approx(1.0)


def exif_rotated(upright: Image.Image) -> bytes:
    """What a phone writes: pixels stored sideways plus EXIF Orientation=6 (rotate 90 CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def test_exif_rotated_photo_is_turned_upright(client, fixture_images):
    upright = Image.open(fixture_images[2]).convert("RGB")
    straight = post(client, encode(upright)).json()
    rotated = post(client, exif_rotated(upright)).json()
    sideways = post(client, encode(upright.transpose(Image.Transpose.ROTATE_90))).json()
    assert rotated["probabilities"] == straight["probabilities"]
    assert sideways["probabilities"] != straight["probabilities"]


def test_server_keeps_serving_after_bad_input(client, jpeg):
    for bad in (b"", b"junk", jpeg[:300], png_header_only(50_000, 50_000)):
        assert post(client, bad).status_code in (400, 413, 415)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert post(client, jpeg).status_code == 201


def test_model_card(client, tiny_bundle):
    response = client.get("/api/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert [c["code"] for c in body["classes"]] == list(HAM10000_CLASSES)
    assert body["classes"][4] == {
        "index": 4,
        "code": "mel",
        "name": "Melanoma",
        "malignant": True,
    }
    assert body["version"].startswith("tiny@")
    assert body["input"]["height"] == 64 and body["input"]["width"] == 80
    assert body["intended_use"].startswith("Decision support for clinicians")
    assert body["thresholds"] == {"uncertain_below": 0.5, "triage_malignant": 0.5}
    assert body["disclaimer"] == DISCLAIMER


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model"].startswith("tiny@")


def test_openapi_docs(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/swagger-ui/swagger-ui-bundle.js" in page.text  # served locally, no CDN
    assert client.get("/swagger-ui/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/predictions",
        "/api/v1/predictions/{prediction_id}",
        "/api/v1/predictions/{prediction_id}/feedback",
        "/api/v1/feedback",
        "/api/v1/model",
        "/healthz",
        "/readyz",
    } <= set(paths)
    summary = paths["/api/v1/predictions"]["post"]["description"]
    assert summary == "Classify one lesion image: top-k classes, triage, uncertainty and a heatmap."
