"""Devices and several processes for one training run.

`torchrun --nproc_per_node=N -m dermalens.cli train key=value ...` starts N copies of the
run. Each reads RANK, WORLD_SIZE and LOCAL_RANK from its environment and joins one process
group: NCCL when the run trains on CUDA GPUs, gloo on the CPU. The network is wrapped in
DistributedDataParallel. Each process trains on its share of every epoch's draws, and the
validation shards are gathered, so every process takes the same decisions. Only rank 0
writes to the run folder. A plain `dermalens train` is a world of one, and then nothing here
changes what the run computes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from dermalens.config import ConfigError, TrainConfig

# At the end, rank 0 packages, calibrates and tests the bundle on its own while the other
# processes wait at a barrier. The default timeout (10 minutes for NCCL) can be too short
# for that on a large test part.
TIMEOUT = timedelta(minutes=60)
_joined = []  # the process group this module started, for `stop` to end


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`device=` setting -> torch device: `auto` takes CUDA, else MPS, else the CPU."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise ConfigError("device='cuda': PyTorch sees no CUDA GPU here; use device=cpu")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"device='cuda': process {local_rank} has no GPU of its own "
                f"({torch.cuda.device_count()} visible); start one process per GPU"
            )
        return torch.device("cuda", local_rank)
    if name == "mps" and not mps:
        raise ConfigError("device='mps': PyTorch sees no Apple GPU here; use device=cpu")
    return torch.device(name)


def precision(cfg: TrainConfig, device: torch.device) -> str:
    """What the forward pass runs in: `amp=` on CUDA, `bf16=` on the CPU, fp32 elsewhere."""
    if device.type == "cuda":
        return "fp32" if cfg.amp == "none" else f"{cfg.amp} autocast"
    return "bf16 autocast" if cfg.bf16 and device.type == "cpu" else "fp32"


@dataclass
class Context:
    """Where this process runs: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:  # NCCL: on this process's own GPU, not a guessed one
            cuda = self.device.type == "cuda"
            dist.barrier(device_ids=[self.device.index] if cuda else None)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value`, in rank order, on every process."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def total(self, *numbers: float) -> list[float]:
        """Sums over the processes."""
        if not self.distributed:
            return list(numbers)
        # NCCL reduces only tensors on the GPU
        values = torch.tensor(numbers, dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return values.tolist()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that trains: the network itself, or DDP around it.

        DDP copies rank 0's weights and buffers once, here, but not the buffers on each
        forward: `sync_buffers` copies rank 0's after every step instead, so the weight
        average and the final weights agree on every rank."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    @torch.no_grad()
    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's batch-norm running statistics on every process (one broadcast per dtype)."""
        if not self.distributed:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in model.buffers():
            by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([b.reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    def launch(self, cfg: TrainConfig) -> dict[str, Any]:
        """How the run ran, recorded beside its settings in config.json and the bundle."""
        return {
            "world_size": self.world_size,
            "batch_size_per_process": cfg.batch_size,
            "effective_batch_size": cfg.batch_size * self.world_size,
            "lr": cfg.lr,
            "lr_scaled_with_world_size": False,
            "device": self.device.type,
            "backend": dist.get_backend() if self.distributed else None,
            "precision": precision(cfg, self.device),
        }


def start(cfg: TrainConfig) -> Context:
    """This process's context; under torchrun, also joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0")) if world > 1 else 0
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = pick_device(cfg.device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
        if cfg.amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ConfigError("amp='bf16': this GPU has no bfloat16; use amp=fp16 or amp=none")
    if world > 1 and not dist.is_initialized():
        if device.type == "mps":
            raise ConfigError("device='mps' trains in one process only; use device=cpu")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
        _joined.append(backend)
    return Context(rank, world, local, device)


def stop() -> None:
    """Leave the process group `start` joined (also after an error), so the process exits."""
    if _joined and dist.is_initialized():
        dist.destroy_process_group()
    _joined.clear()


class WeightedShare(Sampler[int]):
    """This process's share of one seeded stream of weighted draws (with replacement).

    Together the processes draw, each epoch, what one weighted sampler over the whole
    training part would draw: the class balance does not depend on their number. Call
    `set_epoch` before each epoch for new draws."""

    def __init__(self, weights, rank: int, world_size: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.num_samples = math.ceil(len(self.weights) / world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(
            self.weights, self.num_samples * self.world_size, True, generator=generator
        )
        return iter(draws[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples
