"""Inference engines behind one interface: ONNX Runtime (serving, no PyTorch) or PyTorch.

`Engine.run(batch, meta)` takes preprocessed float32 NCHW arrays and returns raw logits
and the last feature map (for CAM heatmaps).
"""

from __future__ import annotations

import numpy as np

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
        import onnxruntime as ort

        from dermalens.fast import session_options

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
            from dermalens import metadata

            feeds["metadata"] = (
                meta.astype(np.float32)
                if meta is not None
                else np.tile(metadata.encode(), (len(batch), 1))
            )
        logits, features = self.session.run(["logits", "features"], feeds)
        return logits, features

    def head(self):
        if self._head is None:
            import onnx
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
        import torch

        from dermalens.models import build_model

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


class TorchBf16Engine(TorchEngine):
    """PyTorch with bfloat16 autocast (oneDNN uses AVX-512 BF16 or AMX where the CPU has
    them); logits and features come back as float32."""

    name = "torch-bf16"

    def run(self, batch, meta=None):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.contiguous(memory_format=torch.channels_last)
        m = torch.from_numpy(meta.astype(np.float32)) if meta is not None else None
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            fmap = self.model.features(x)
            logits = self.model.classify(fmap, m)
        return logits.float().numpy(), fmap.float().numpy()


def make_engine(
    bundle: Bundle,
    backend: str = "auto",
    threads: int = 0,
    precision: str = "fp32",
    spinning: bool = True,
) -> Engine:
    """ONNX Runtime when the bundle has an ONNX file (or asked), else PyTorch.

    `precision` other than "fp32" serves one of the bundle's accepted variants (see
    `dermalens.variants`): "int8", "bf16", or "auto" for the fastest accepted one (the
    plain model when none is accepted). A rejected or missing variant is an error; a
    variant brings its own backend (int8 and fp32 ONNX Runtime, bf16 PyTorch).
    `spinning=False` lets idle ONNX Runtime threads sleep at once (see `OnnxEngine`).
    """
    if backend not in ("auto", "onnx", "torch"):
        raise ValueError(f"backend {backend!r} not in ('auto', 'onnx', 'torch')")
    if bundle.is_ensemble:
        if precision not in ("fp32", "auto"):
            raise BundleError(
                f"{bundle.path}: an ensemble serves its members at fp32 only, "
                f"not precision {precision!r}"
            )
        from dermalens.ensemble import EnsembleEngine

        return EnsembleEngine(bundle, backend, threads)  # its members never spin
    if precision != "fp32":
        from dermalens.variants import select_variant, variant_engine

        chosen = select_variant(bundle, precision)
        if chosen is not None:
            return variant_engine(bundle, chosen, threads=threads, spinning=spinning)
    if backend == "onnx" or (backend == "auto" and bundle.has(ONNX)):
        if not bundle.has(ONNX):
            raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}`")
        return OnnxEngine(bundle, threads, spinning=spinning)
    if not bundle.has(WEIGHTS):
        raise BundleError(f"{bundle.path}: no {WEIGHTS} for the PyTorch backend")
    return TorchEngine(bundle, threads)
