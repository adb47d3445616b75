"""The heatmap's small CAM grid (`heatmap.grid`, `overlay=false`): its shape and range, and
that it is the same map as the PNG overlay's (upsampled and coloured, it gives the PNG).

    nice -n 10 pytest tests/test_heatmap_grid.py -q
"""

from __future__ import annotations

import base64
import io
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import DEFAULT_MODEL
from dermalens.preprocess import resize
from dermalens.runtime.explain import colour_map, overlay, upsample
from dermalens.runtime.predictor import Predictor
from dermalens.serve.app import create_app
from dermalens.serve.settings import Settings

WIDTH = 240  # display_width of the overlay in these tests


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(
        model=DEFAULT_MODEL, data_dir=tmp_path_factory.mktemp("grid"), display_width=WIDTH
    )
    with TestClient(create_app(settings)) as client:
        yield client


def post(client, path, query: str):
    files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
    response = client.post(f"/api/v1/predictions?{query}", files=files)
    assert response.status_code == 201, response.text
    return response.json()


def png(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def test_grid_only_has_the_feature_map_shape_and_range(client, fixture_images):
    pre = Predictor(DEFAULT_MODEL, backend="onnx").pre
    for path in fixture_images[:3]:
        heatmap = post(client, path, "explain=true&overlay=false")["heatmap"]
        assert heatmap["image"] is None
        grid = np.array(heatmap["grid"])
        # EfficientNet's stride 32: ceil(150 / 32) x ceil(200 / 32)
        assert grid.shape == tuple(heatmap["shape"]) == (-(-pre.height // 32), -(-pre.width // 32))
        assert grid.min() >= 0 and grid.max() == pytest.approx(1, abs=1e-4)


def test_grid_is_the_map_the_png_overlay_draws(client, fixture_images):
    predictor = Predictor(DEFAULT_MODEL, backend="onnx")
    pre = predictor.pre
    path = fixture_images[4]
    both = post(client, path, "explain=true")  # the default: PNG overlay and grid
    grid_only = post(client, path, "explain=true&overlay=false")
    assert both["heatmap"]["grid"] == grid_only["heatmap"]["grid"]
    assert both["heatmap"]["target"] == grid_only["heatmap"]["target"] == both["top"][0]["code"]
    grid = np.array(grid_only["heatmap"]["grid"], dtype=np.float32)

    direct = predictor.predict(path, explain=True)
    np.testing.assert_allclose(grid, direct.heatmap_grid, atol=1e-4)
    np.testing.assert_allclose(upsample(grid, (pre.height, pre.width)), direct.heatmap, atol=1e-3)

    # The PNG is this grid upsampled, coloured and blended over the model's crop.
    height = round(WIDTH * pre.height / pre.width)
    drawn = png(both["heatmap"]["image"]).astype(int)
    photo = resize(Image.open(path).convert("RGB"), replace(pre, width=WIDTH, height=height))
    expected = np.asarray(overlay(photo, upsample(grid, (pre.height, pre.width)))).astype(int)
    assert drawn.shape == expected.shape == (height, WIDTH, 3)
    assert np.abs(drawn - expected).max() <= 2  # the grid is rounded to 4 decimals


def test_colour_map_matches_the_page_formula():
    # static/app.js heatColour: the same piecewise-linear blue-cyan-yellow-red scale
    h = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(
        colour_map(h),
        [[0, 0, 0.5], [0, 0.5, 1], [0.5, 1, 0.5], [1, 0.5, 0], [0.5, 0, 0]],
    )
