"""Where the int8 error comes from: weights or activations (a PyTorch simulation).

    python benchmarks/int8_error_sources.py src/dermalens/bundled/default \
        --split-file benchmarks/splits/ham10000-seed0.csv --images 300

Simulates ONNX Runtime's static int8 scheme on the bundle's PyTorch model: weights int8
symmetric per output channel after folding each BatchNorm into its conv; activations
uint8 per tensor (min-max ranges from calibration images of the train part) on every
BatchNorm + activation output. Each configuration quantises only part of the network,
so the error of weights and of activations can be read apart. Agreement is measured on
the served (calibrated) probabilities against the same model in float, on held-out
images, with the issue's limits in mind: top-1 >= 0.99 and max |dp| <= 0.02.

A weight configuration's error disappears when the float model itself is given the
dequantised weights (what quantisation-aware training ends with); an activation
configuration's error does not, so it bounds from below what any int8 variant of these
weights can reach against its own float model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermalens.bundle import load_bundle
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import load_split
from dermalens.preprocess import to_input
from dermalens.runtime.calibration import Calibration
from dermalens.runtime.engines import TorchEngine

CONFIGS = {  # name: (quantise weights, quantise activations, name prefixes kept in float)
    "weights": (True, False, ()),
    "activations": (False, True, ()),
    "weights + activations": (True, True, ()),
    "weights + activations, stem and stage 0 in float": (True, True, ("stem", "blocks.0")),
    "activations, stem and stages 0-1 in float": (False, True, ("stem", "blocks.0", "blocks.1")),
}


def conv_bn_pairs(backbone: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """Each conv with the BatchNorm registered right after it (timm's EfficientNet order)."""
    pairs, conv = [], None
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            conv = (name, module)
        elif isinstance(module, nn.BatchNorm2d) and conv is not None:
            pairs.append((conv[0], conv[1], module))
            conv = None
    return pairs


def _kept(name: str, keep: tuple[str, ...]) -> bool:
    if name in ("conv_stem", "bn1"):  # the stem's conv and BatchNorm
        return "stem" in keep
    return any(name.startswith(k) for k in keep)


def round_folded(weight: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """`weight` with its BN-folded value rounded to int8 per output channel, unfolded again
    (conv + BN then computes exactly the quantised folded conv); channels whose BN gain is
    zero keep their weight."""
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None].detach()
    usable = gain.abs() > 1e-12
    safe = torch.where(usable, gain, torch.ones_like(gain))
    folded = weight * safe
    scale = (folded.abs().amax(dim=(1, 2, 3), keepdim=True) / 127).clamp_min(1e-12).detach()
    rounded = (folded / scale).round().clamp(-127, 127) * scale / safe
    return torch.where(usable, rounded, weight)


@torch.no_grad()
def quantise_weights(backbone: nn.Module, keep: tuple[str, ...]) -> None:
    """Round each BN-folded conv weight to int8 per output channel, in place."""
    for name, conv, bn in conv_bn_pairs(backbone):
        if not _kept(name, keep):
            conv.weight.copy_(round_folded(conv.weight, bn))


class FakeQuant(nn.Module):
    """uint8 per-tensor affine quantisation with a min-max range seen while calibrating."""

    def __init__(self) -> None:
        super().__init__()
        self.low, self.high, self.calibrating = 0.0, 0.0, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.low, self.high = min(self.low, x.min().item()), max(self.high, x.max().item())
            return x
        scale = max(self.high - self.low, 1e-12) / 255
        zero = round(-self.low / scale)
        return ((x / scale).round() + zero).clamp(0, 255).sub(zero).mul(scale)


def quantise_activations(
    model: nn.Module, keep: tuple[str, ...], calib: torch.Tensor, quant: type = FakeQuant
) -> None:
    """Hook a `quant` (a FakeQuant) on every BatchNorm + activation output not kept in
    float, and fix their ranges on `calib`."""
    quants = []
    for name, module in model.backbone.named_modules():
        if type(module).__name__ == "BatchNormAct2d" and not _kept(name, keep):
            fq = quant()
            quants.append(fq)
            module.register_forward_hook(lambda _m, _i, out, fq=fq: fq(out))
    logits(model, calib)
    for fq in quants:
        fq.calibrating = False


def agreement(probs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, max and 99th percentile of the largest |dp| per image."""
    dp = np.abs(probs - reference).max(axis=1)
    return {
        "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_dp": float(dp.max()),
        "p99_abs_dp": float(np.quantile(dp, 0.99)),
    }


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return torch.cat([model(x[i : i + 50]) for i in range(0, len(x), 50)]).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data", nargs="?", default="../shared/data/ham10000")
    p.add_argument("--split-file", required=True)
    p.add_argument("--images", type=int, default=300, help="held-out (test) images")
    p.add_argument("--calib", type=int, default=64, help="calibration images (train part)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = load_bundle(args.model)
    table = load_split(load_dataset(args.data), Path(args.split_file))
    test = table[table["split"] == "test"]["path"].tolist()[: args.images]
    train = table[table["split"] == "train"]["path"].tolist()
    train = train[:: max(1, len(train) // args.calib)][: args.calib]
    pre = bundle.preprocessing
    x = torch.from_numpy(np.stack([to_input(f, pre) for f in test]))
    calib = torch.from_numpy(np.stack([to_input(f, pre) for f in train]))
    calibration = Calibration.of(bundle)

    def model() -> nn.Module:
        return TorchEngine(bundle).model.float().eval().to(memory_format=torch.contiguous_format)

    reference = calibration.probabilities(logits(model(), x))
    report = {"images": len(test), "calibration_images": len(train), "configs": {}}
    print(f"{len(test)} held-out images, {len(train)} calibration images")
    print("| quantised | top-1 agreement | answer agreement | max abs dp | 99th pct of dp |")
    print("|---|---|---|---|---|")
    for name, (weights, activations, keep) in CONFIGS.items():
        m = model()
        if weights:
            quantise_weights(m.backbone, keep)
        if activations:
            quantise_activations(m, keep, calib)
        probs = calibration.probabilities(logits(m, x))
        same = calibration.decide(probs) == calibration.decide(reference)
        row = {**agreement(probs, reference), "answer_agreement": float(same.mean())}
        report["configs"][name] = row
        cells = [row[k] for k in ("top1_agreement", "answer_agreement", "max_abs_dp", "p99_abs_dp")]
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in cells) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
