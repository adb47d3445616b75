"""The scope gate's scene model: an untuned ImageNet backbone's pooled features (ONNX).

    scene = SceneModel("src/dermalens/bundled/gate/scene.onnx", threads=1)
    vectors = scene.features(batch)  # the feature model's preprocessed batch -> N x C

The gate's feature model (the default bundle) was fine-tuned on dermoscopy: its features
tell lesion classes apart and map much else (a rash, an eczema patch) onto lesions. An
ImageNet backbone that never saw a lesion label keeps the scene apart (a wide field of
inflamed skin, hair, a nail against a lesion close-up), so the gate also asks "does this
look like a lesion close-up of this kind in the ImageNet features?" (`runtime.scope`).
It reads the same preprocessed batch as the feature model; `export.scene_export` writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from dermalens.bundle import BundleError
from dermalens.runtime.engines import session_options

SCENE_ONNX = "scene.onnx"
OUTPUT = "scene"


class SceneModel:
    """ONNX Runtime over `scene.onnx`: image (N x 3 x H x W) -> scene (N x C)."""

    # one call per request or batch, then other work: idle threads that busy-wait only take
    # the cores the feature model's next call needs, so they always sleep
    spinning = False

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        options = session_options(threads, level="all", spinning=self.spinning)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from exc
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != [OUTPUT]:
            raise BundleError(f"{self.path}: expected the output ['{OUTPUT}'], found {outputs}")

    def features(self, batch: np.ndarray) -> np.ndarray:
        feeds = {"image": np.ascontiguousarray(batch, dtype=np.float32)}
        return self.session.run([OUTPUT], feeds)[0]
