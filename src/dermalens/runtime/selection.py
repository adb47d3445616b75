"""Which engine serves a bundle: ONNX Runtime or PyTorch, an accepted precision variant, or
an ensemble of member engines.

    from dermalens.runtime.selection import make_engine
    engine = make_engine(load_bundle("runs/x/bundle"), precision="auto")
"""

from __future__ import annotations

from dermalens.bundle import ONNX, WEIGHTS, Bundle, BundleError, load_ensemble_members
from dermalens.files import sha256
from dermalens.runtime.engines import Engine, OnnxEngine, TorchEngine
from dermalens.runtime.ensemble import EnsembleEngine


def make_engine(
    bundle: Bundle,
    backend: str = "auto",
    threads: int = 0,
    precision: str = "fp32",
    spinning: bool = True,
) -> Engine:
    """ONNX Runtime when the bundle has an ONNX file (or asked), else PyTorch.

    `precision="auto"` serves the bundle's optimised fp32 graph (`model.opt.onnx`, built
    by `dermalens export --precision fp32`) when it was accepted and measured faster, else
    the plain model; "fp32" always serves the plain `model.onnx`.
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
        # hashes were checked when the ensemble was loaded (as a single bundle's weights are)
        members = load_ensemble_members(bundle, verify=False)
        engines = [make_engine(m, backend, threads, "fp32", spinning=False) for m in members]
        return EnsembleEngine(bundle, members, engines)
    check_precision(precision)
    if precision == "auto" and backend != "torch" and accepted_variant(bundle) is not None:
        path = str(bundle.file(VARIANT_FILE))
        return OnnxEngine(bundle, threads, path=path, spinning=spinning)
    if backend == "onnx" or (backend == "auto" and bundle.has(ONNX)):
        if not bundle.has(ONNX):
            raise BundleError(f"{bundle.path}: no {ONNX}; run `dermalens export {bundle.path}`")
        return OnnxEngine(bundle, threads, spinning=spinning)
    if not bundle.has(WEIGHTS):
        raise BundleError(f"{bundle.path}: no {WEIGHTS} for the PyTorch backend")
    return TorchEngine(bundle, threads)


PRECISIONS = ("auto", "fp32")  # what `precision=` (CLI --precision, DERMALENS_PRECISION) takes
VARIANT = "fp32"  # the one variant the library builds (`export.variants`)
VARIANT_FILE = "model.opt.onnx"  # its graph: pads frozen, ONNX Runtime's optimisations saved
TOP1_MIN = 0.99  # least top-1 agreement with the plain model for the variant to be served
MAX_PROB_DIFF = 0.02  # largest |p_variant - p_plain| over all images and classes


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision {precision!r} not in {PRECISIONS}: this version builds no int8 or "
            f"bf16 variant (none met the agreement bar; benchmarks/RESULTS.md)"
        )


def accepted_variant(bundle: Bundle) -> dict | None:
    """The record of the bundle's optimised fp32 variant when it was accepted, its file is
    present and unchanged, and it was measured faster than the plain model; else None."""
    rec = (bundle.info.get("variants") or {}).get(VARIANT)
    if not rec or not rec.get("accepted") or not bundle.has(VARIANT_FILE):
        return None
    if sha256(bundle.file(VARIANT_FILE)) != rec.get("sha256"):
        return None
    if rec.get("images_per_s", 0) <= rec.get("reference_images_per_s", 0):
        return None  # measured, and no faster than the plain model
    return rec
