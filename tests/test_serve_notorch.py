"""The service runs without PyTorch: a fresh interpreter that cannot import torch, timm or
torchvision starts the app and serves a prediction with its heatmap.

    nice -n 10 pytest tests/test_serve_notorch.py -q
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("torch", "timm", "torchvision")
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked: serving must not need it")
            return None

    sys.meta_path.insert(0, Blocker())

    from fastapi.testclient import TestClient

    from dermalens.serve.app import create_app
    from dermalens.serve.settings import Settings

    bundle, data_dir, image = sys.argv[1:4]
    app = create_app(Settings(model=bundle, data_dir=data_dir))
    with TestClient(app) as client:
        with open(image, "rb") as fh:
            response = client.post("/api/v1/predictions", files={"file": ("x.jpg", fh.read())})
        assert response.status_code == 201, response.text
        assert response.json()["heatmap"]["image"].startswith("data:image/png;base64,")
        assert client.get("/").status_code == 200
        assert client.get("/api/v1/model").status_code == 200
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("attempted:", attempts)
    print("served without torch")
    """
)


def test_serving_path_never_imports_torch(tiny_bundle, tmp_path, fixture_images):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_bundle), str(tmp_path), str(fixture_images[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "served without torch" in result.stdout
    assert "attempted: []" in result.stdout, result.stdout
