"""The serving heatmap (ONNX feature map + NumPy CAM) equals PyTorch autograd Grad-CAM.

With a global-average-pool -> linear head, d logit_c / d F_k(i, j) = W[c, k] / (h * w), so
Grad-CAM's channel weights are the head's weights up to a positive scale and the two maps
agree once scaled to [0, 1]. This test checks that on real images, by autograd.

    nice -n 10 pytest tests/test_serve_gradcam.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_bundle
from dermalens.runtime.engines import OnnxEngine, TorchEngine
from dermalens.runtime.explain import cam
from dermalens.runtime.predictor import Predictor


@pytest.fixture(scope="module", params=["image-only", "with-metadata"])
def bundle(request, tiny_bundle, tmp_path_factory):
    if request.param == "image-only":
        return tiny_bundle
    return make_tiny_bundle(tmp_path_factory.mktemp("meta") / "tiny-meta", use_metadata=True)


def autograd_gradcam(model, x: torch.Tensor, meta: torch.Tensor | None) -> tuple[np.ndarray, int]:
    """Textbook Grad-CAM on the last feature map: ReLU(sum_k mean(dy_c/dF_k) F_k), scaled."""
    fmap = model.features(x).detach().requires_grad_(True)
    logits = model.classify(fmap, meta)
    index = int(logits[0].argmax())
    logits[0, index].backward()
    weights = fmap.grad.mean(dim=(2, 3), keepdim=True)
    gradcam = torch.relu((weights * fmap).sum(dim=1))[0].detach()
    return (gradcam / gradcam.max()).numpy(), index


def test_onnx_cam_equals_pytorch_gradcam(bundle, fixture_images):
    onnx_predictor = Predictor(bundle, backend="onnx")
    onnx_engine: OnnxEngine = onnx_predictor.engine
    model = (
        TorchEngine(onnx_predictor.bundle).model.float().to(memory_format=torch.contiguous_format)
    )
    pre = onnx_predictor.pre
    meta_row = onnx_predictor.meta_vector(age=50, sex="male", site="back")
    checked = 0
    for path in fixture_images:
        x = onnx_predictor.prepare(path)[None]
        meta = torch.from_numpy(meta_row) if meta_row is not None else None
        reference, index = autograd_gradcam(model, torch.from_numpy(x), meta)
        if reference.max() <= 0 or np.isnan(reference).any():
            continue  # a map that ReLU zeroes out carries no information to compare
        logits, fmap = onnx_engine.run(x, meta_row)
        assert int(logits[0].argmax()) == index
        weight = onnx_engine.head()[0]

        # At feature-map resolution: the same map to float precision.
        low = cam(fmap[0], weight, index, fmap.shape[2:])
        np.testing.assert_allclose(low, reference, atol=1e-4)

        # What the service returns: upsampled to the model input size.
        served = onnx_predictor.predict(path, explain=True, age=50, sex="male", site="back")
        assert served.heatmap.shape == (pre.height, pre.width)
        assert served.top[0].code == onnx_predictor.bundle.classes[index]
        upsampled = torch.nn.functional.interpolate(
            torch.from_numpy(reference)[None, None],
            size=(pre.height, pre.width),
            mode="bilinear",
            align_corners=False,
        )[0, 0].numpy()
        np.testing.assert_allclose(served.heatmap, upsampled, atol=2e-3)
        assert served.heatmap.max() > 0.5 > served.heatmap.min()  # a map, not a flat field
        checked += 1
    assert checked >= 5, "too few images gave a non-zero Grad-CAM to compare"
