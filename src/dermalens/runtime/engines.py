"""Inference engines behind one interface: ONNX Runtime (serving, no PyTorch) or PyTorch.

    engine = OnnxEngine(load_bundle("src/dermalens/bundled/default"))
    logits, features = engine.run(batch)  # batch: preprocessed float32 N x 3 x H x W

`Engine.run(batch, meta)` returns raw logits and the last feature map (for CAM heatmaps
and the OOD check). `session_options` holds the ONNX Runtime thread settings used
everywhere."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from dermalens import patient
from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError


class Engine:
    bundle: Bundle
    name: str

    def run(
        self, batch: np.ndarray, meta: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """(weight, bias) of the linear head, for CAM: weight is classes x features(+meta)."""
        raise NotImplementedError


class OnnxEngine(Engine):
    name = "onnxruntime"

    def __init__(
        self, bundle: Bundle, threads: int = 0, path: str | None = None, spinning: bool = True
    ):
        """`spinning=False`: idle ORT threads sleep at once instead of busy-waiting, which
        leaves the cores to the NumPy work around each call (see `fast.session_options`)."""
        self.bundle = bundle
        self.spinning = spinning
        options = session_options(threads, level="all", spinning=spinning)
        model = path or str(bundle.file(ONNX))
        self.model_path = model
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"{model}: ONNX Runtime cannot load it ({exc})") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs[:2] != ["logits", "features"]:
            raise BundleError(f"{model}: expected outputs ['logits', 'features'], found {outputs}")
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(bundle.classes):
            raise BundleError(
                f"{model}: the model has {n_out} outputs but bundle.json names "
                f"{len(bundle.classes)} classes"
            )
        self._head = None

    def run(self, batch, meta=None):
        feeds = {"image": np.ascontiguousarray(batch, dtype=np.float32)}
        if "metadata" in self.inputs:
            feeds["metadata"] = (
                meta.astype(np.float32)
                if meta is not None
                else np.tile(patient.encode_fields(self.bundle.metadata_fields), (len(batch), 1))
            )
        logits, features = self.session.run(["logits", "features"], feeds)
        return logits, features

    def head(self):
        if self._head is None:
            import onnx  # not in the core install: only for heatmaps
            from onnx import numpy_helper

            graph = onnx.load(str(self.bundle.file(ONNX)), load_external_data=False).graph
            init = {t.name: t for t in graph.initializer}
            found = {}
            for part in ("weight", "bias"):
                names = [n for n in init if n.endswith(f"head.{part}")]
                if len(names) != 1:
                    raise BundleError(f"{self.bundle.file(ONNX)}: cannot find the head's {part}")
                found[part] = numpy_helper.to_array(init[names[0]])
            self._head = (found["weight"], found["bias"])
        return self._head


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, bundle: Bundle, threads: int = 0):
        # the serving install has no PyTorch
        import torch

        from dermalens.networks import build_model  # imports torch

        self.torch = torch
        self.bundle = bundle
        if threads:
            torch.set_num_threads(threads)
        arch = bundle.arch
        model, _ = build_model(
            arch["model"],
            len(bundle.classes),
            "none",
            arch.get("drop_rate", 0.0),
            arch.get("use_metadata", False),
            tuple(bundle.metadata_fields) or patient.FIELDS,
        )
        state = torch.load(bundle.file(WEIGHTS), map_location="cpu", weights_only=True)
        state = {k: v.float() for k, v in state.items()}
        head = state.get("head.weight")
        if head is not None and head.shape[0] != len(bundle.classes):
            raise BundleError(
                f"{bundle.file(WEIGHTS)}: the head has {head.shape[0]} outputs but bundle.json "
                f"names {len(bundle.classes)} classes"
            )
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise BundleError(
                f"{bundle.file(WEIGHTS)}: weights do not fit architecture {arch['model']} ({exc})"
            ) from exc
        self.model = model.eval().to(memory_format=torch.channels_last)

    def run(self, batch, meta=None):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.contiguous(memory_format=torch.channels_last)
        m = torch.from_numpy(meta.astype(np.float32)) if meta is not None else None
        with torch.inference_mode():
            fmap = self.model.features(x)
            logits = self.model.classify(fmap, m)
        return logits.numpy(), fmap.float().numpy()

    def head(self):
        return (
            self.model.head.weight.detach().numpy(),
            self.model.head.bias.detach().numpy(),
        )


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int = 0, level: str = "all", spinning: bool = True):
    """ORT session options: `threads` intra-op threads (0: every core), one inter-op thread.

    `spinning=False` makes idle ORT threads sleep at once instead of busy-waiting, which
    leaves the CPU to image-decoding threads running beside the model.
    """
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if level not in levels:
        raise ValueError(f"optimisation level {level!r} not in {list(levels)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[level]
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
