"""Quantisation-aware fine-tuning with distillation, simulated: can an int8 model be
trained to agree with the shipped float model within the issue's limits?

    python benchmarks/qat_probe.py src/dermalens/bundled/default \
        --split-file benchmarks/splits/ham10000-seed0.csv --steps 300 --images 400

The student is a copy of the bundle's model with the int8 scheme of
`int8_error_sources.py` simulated in its forward pass (weights int8 per channel after
BatchNorm folding, activations uint8 per tensor with fixed min-max ranges), gradients
passing straight through the rounding. It is trained on training images to match the
teacher's served probabilities (KL divergence, teacher = the unchanged float model, which
stays the reference). Before and after, it reports top-1 agreement and max |dp| of the
simulated int8 student against the teacher on held-out images. A simulation only: a
student that passed would still have to be exported and checked in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).parent))
from int8_error_sources import (  # noqa: E402
    FakeQuant,
    agreement,
    conv_bn_pairs,
    logits,
    quantise_activations,
    round_folded,
)

from dermalens.bundle import load_bundle  # noqa: E402
from dermalens.data.loaders import load_dataset  # noqa: E402
from dermalens.data.splits import load_split  # noqa: E402
from dermalens.imageio import load_image  # noqa: E402
from dermalens.preprocess import to_input  # noqa: E402
from dermalens.runtime.calibration import Calibration  # noqa: E402
from dermalens.runtime.engines import TorchEngine  # noqa: E402
from dermalens.training.augment import Augment  # noqa: E402


class FoldedInt8(nn.Module):
    """Parametrisation of a conv weight: `round_folded`, invisible to the gradient."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.bn = [bn]  # a list: not a submodule of the parametrisation

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (round_folded(w, self.bn[0]) - w).detach()


class StraightThrough(FakeQuant):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quantised = super().forward(x)  # while calibrating: records the range, returns x
        return quantised if self.calibrating else x + (quantised - x).detach()


def make_student(model: nn.Module, calib: torch.Tensor) -> nn.Module:
    student = copy.deepcopy(model)
    for _, conv, bn in conv_bn_pairs(student.backbone):
        parametrize.register_parametrization(conv, "weight", FoldedInt8(bn))
    quantise_activations(student, (), calib, StraightThrough)
    return student


def measure(student, x, reference, calibration) -> dict:
    probs = calibration.probabilities(logits(student.eval(), x))
    found = agreement(probs, reference)
    return {
        "top1": found["top1_agreement"],
        "max_abs_dp": found["max_abs_dp"],
        "p99_abs_dp": found["p99_abs_dp"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("data", nargs="?", default="../shared/data/ham10000")
    p.add_argument("--split-file", required=True)
    p.add_argument("--images", type=int, default=400, help="held-out (test) images")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bundle = load_bundle(args.model)
    pre, calibration = bundle.preprocessing, Calibration.of(bundle)
    table = load_split(load_dataset(args.data), Path(args.split_file))
    test = table[table["split"] == "test"]["path"].tolist()[: args.images]
    train = table[table["split"] == "train"]["path"].tolist()
    x = torch.from_numpy(np.stack([to_input(f, pre) for f in test]))
    calib = torch.from_numpy(np.stack([to_input(f, pre) for f in train[::100][:64]]))
    teacher = TorchEngine(bundle).model.float().eval().to(memory_format=torch.contiguous_format)
    reference = calibration.probabilities(logits(teacher, x))
    student = make_student(teacher, calib)
    print(f"{len(test)} held-out images; before: {measure(student, x, reference, calibration)}")
    temperature = torch.tensor(calibration.temperature, dtype=torch.float32)
    bias = torch.tensor(calibration.class_bias, dtype=torch.float32)
    served = lambda z: torch.log_softmax(z / temperature + bias, dim=1)  # noqa: E731
    params = [q for n, q in student.named_parameters() if "running" not in n]
    optimiser = torch.optim.AdamW(params, lr=args.lr, weight_decay=0)
    augment, rng = Augment(pre, seed=0), np.random.default_rng(0)
    start = time.time()
    for step in range(args.steps):
        student.train()
        for module in student.modules():  # BatchNorm statistics stay those of the teacher
            if isinstance(module, nn.BatchNorm2d | nn.Dropout):
                module.eval()
        pick = rng.choice(len(train), args.batch, replace=False)
        batch = torch.from_numpy(
            np.stack([to_input(augment(load_image(train[i])), pre) for i in pick])
        )
        with torch.no_grad():
            target = served(teacher(batch)).exp()
        loss = nn.functional.kl_div(served(student(batch)), target, reduction="batchmean")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            seconds = time.time() - start
            print(f"step {step + 1}: KL {loss.item():.5f} ({seconds:.0f} s)", flush=True)
    print(f"after {args.steps} steps: {measure(student, x, reference, calibration)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
