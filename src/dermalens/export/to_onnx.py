"""ONNX export of a bundle's PyTorch weights, checked against PyTorch on real images.

    dermalens export BUNDLE [--check-images DIR]

`model.onnx` has two outputs, `logits` and `features` (the last feature map, for CAM
heatmaps without PyTorch), and the bundle description in its metadata.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from dermalens import patient
from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, load_bundle
from dermalens.export.graph import freeze_pads
from dermalens.files import now
from dermalens.preprocess import to_input
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.engines import OnnxEngine, TorchEngine


class _Exported(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, with_meta: bool):
        super().__init__()
        self.model = model
        self.with_meta = with_meta

    def forward(self, image, metadata=None):
        fmap = self.model.features(image)
        return self.model.classify(fmap, metadata if self.with_meta else None), fmap


def export_onnx(
    bundle_path: str | Path,
    check_images: list[Path] | None = None,
    opset: int = 18,
    half_weights: bool = False,
) -> dict:
    """Export `model.onnx` into the bundle; check it against PyTorch; return the check."""
    bundle = load_bundle(bundle_path)
    if bundle.is_ensemble:
        raise BundleError(
            f"{bundle.path}: an ensemble has no weights of its own; export each member "
            f"bundle, then build the ensemble again"
        )
    torch_engine = TorchEngine(bundle)
    pre = bundle.preprocessing
    with_meta = bool(bundle.metadata_fields)
    wrapper = _Exported(
        torch_engine.model.to(memory_format=torch.contiguous_format), with_meta
    ).eval()
    dummy = torch.zeros(1, 3, pre.height, pre.width)
    args: tuple = (dummy,)
    names = ["image"]
    if with_meta:
        args = (dummy, torch.from_numpy(patient.encode_fields(bundle.metadata_fields))[None])
        names.append("metadata")
    tmp = Path(tempfile.mkdtemp(prefix="dermalens-onnx-"))
    try:
        onnx_path = tmp / ONNX
        torch.onnx.export(
            wrapper,
            args,
            str(onnx_path),
            input_names=names,
            output_names=["logits", "features"],
            dynamic_axes={n: {0: "batch"} for n in [*names, "logits", "features"]},
            opset_version=opset,
            dynamo=False,
        )
        # The input size is fixed, so TF-style "same" pads are constants: freezing them
        # drops ~200 shape nodes per call and lets ONNX Runtime fuse each Pad into its Conv.
        freeze_pads(onnx_path, onnx_path, pre.height, pre.width)
        _embed_description(onnx_path, bundle)
        check = compare(bundle, torch_engine, OnnxEngine(bundle, path=str(onnx_path)), check_images)
        shutil.copy(onnx_path, bundle.file(ONNX))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if half_weights:  # smaller committed bundle; loading casts back to float32
        state = torch.load(bundle.file(WEIGHTS), map_location="cpu", weights_only=True)
        torch.save(
            {k: v.half() if v.is_floating_point() else v for k, v in state.items()},
            bundle.file(WEIGHTS),
        )
    bundle.info["onnx_check"] = check
    bundle.save_description()
    return check


def _embed_description(path: Path, bundle: Bundle) -> None:
    import onnx  # not in the core install

    model = onnx.load(str(path))
    description = bundle.description()
    description.pop("history", None)
    for key, value in (
        ("dermalens", json.dumps(description)),
        ("classes", json.dumps(bundle.classes)),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def compare(bundle: Bundle, reference, candidate, images: list[Path] | None) -> dict:
    """Max |difference| of probabilities and top-1 agreement between two engines."""
    pre = bundle.preprocessing
    if images:
        batch = np.stack([to_input(p, pre) for p in images])
        source = f"{len(images)} real images"
    else:
        batch = (
            np.random.default_rng(0).normal(size=(4, 3, pre.height, pre.width)).astype(np.float32)
        )
        source = "4 random inputs"
    ref_logits, _ = reference.run(batch)
    new_logits, _ = candidate.run(batch)
    served = Calibration.of(bundle)  # the bundle's calibration, whatever it is now
    p_ref, p_new = served.probabilities(ref_logits), served.probabilities(new_logits)
    return {
        "images": source,
        "max_abs_prob_diff": float(np.abs(p_ref - p_new).max()),
        "max_abs_logit_diff": float(np.abs(ref_logits - new_logits).max()),
        "top1_agreement": float((served.decide(p_ref) == served.decide(p_new)).mean()),
        "checked": now(),
    }
