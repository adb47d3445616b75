"""PyTorch datasets over a dataset table (decoded images cached in RAM, metadata encoded)
and the loaders a training run draws its batches from, on one process or several."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler, WeightedRandomSampler
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from dermalens import patient
from dermalens.config import ConfigError, TrainConfig
from dermalens.imageio import ImageError, load_image
from dermalens.preprocess import Preprocessing, to_input
from dermalens.training.augment import Augment
from dermalens.training.distributed import Context, WeightedShare
from dermalens.training.steps import class_weights

log = logging.getLogger(__name__)


def decode_all(
    paths: list[str], pre: Preprocessing, progress: bool = True
) -> tuple[list[np.ndarray | None], list[str]]:
    """Decode every image once, resized to cover the model input (uint8, kept in RAM).

    Returns the arrays (None where unreadable) and one problem line per unreadable file.
    """
    images: list[np.ndarray | None] = []
    problems = []
    for path in tqdm(paths, desc="decode", disable=not progress, leave=False):
        try:
            image = load_image(path, draft_size=(pre.width, pre.height))
            # Keep a bit more than the input so random crops have room, but not full-res.
            scale = max(
                1.0, min(image.width / (pre.width * 1.25), image.height / (pre.height * 1.25))
            )
            if scale > 1:
                image = image.resize((round(image.width / scale), round(image.height / scale)))
            images.append(np.asarray(image))
        except ImageError as exc:
            images.append(None)
            problems.append(str(exc))
    return images, problems


class ImageTable(TorchDataset):
    """Items: (CHW float tensor, metadata vector, label index)."""

    def __init__(
        self,
        table: pd.DataFrame,
        classes: list[str],
        pre: Preprocessing,
        images: list[np.ndarray] | None = None,
        augment: Augment | None = None,
        meta_dropout: float = 0.0,
        seed: int | None = None,
        fields: tuple[str, ...] = patient.FIELDS,
        meta_drop_all: float = 0.0,
    ):
        self.table = table.reset_index(drop=True)
        self.index = {c: i for i, c in enumerate(classes)}
        self.pre = pre
        self.images = images
        self.augment = augment
        self.meta_dropout = meta_dropout
        self.meta_drop_all = meta_drop_all
        self.fields = patient.check_fields(fields) or patient.FIELDS
        self.rng = np.random.default_rng(seed)  # metadata dropout (loader workers reseed it)

    def __len__(self) -> int:
        return len(self.table)

    def labels(self) -> np.ndarray:
        return self.table["label"].map(self.index).to_numpy()

    def __getitem__(self, i: int):
        row = self.table.iloc[i]
        if self.images is not None:
            image = Image.fromarray(self.images[i])
        else:
            image = load_image(row["path"], draft_size=(self.pre.width, self.pre.height))
        if self.augment is not None:
            image = self.augment(image)
        x = torch.from_numpy(to_input(image, self.pre))
        fields = patient.row_values(row, self.fields)
        if self.meta_drop_all and self.rng.random() < self.meta_drop_all:
            fields = {}  # as from a clinic that sends only the image
        elif self.meta_dropout:
            fields = {
                k: (None if self.rng.random() < self.meta_dropout else v) for k, v in fields.items()
            }
        meta = torch.from_numpy(patient.encode_fields(self.fields, fields))
        return x, meta, self.index[row["label"]]


def seed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (forked copies share one)."""
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    info.dataset.rng = np.random.default_rng(seed)
    if info.dataset.augment is not None:
        info.dataset.augment.rng.seed(seed)


def make_loader(
    part: pd.DataFrame,
    classes: list[str],
    pre: Preprocessing,
    cfg: TrainConfig,
    train: bool,
    ctx: Context | None = None,
) -> DataLoader:
    """Batches of one split's table for this process.

    Training draws shuffled (or, with `balance=sampler`, class-weighted) batches; under
    torchrun each process takes its share of one seeded stream of draws, reshuffled by the
    sampler's `set_epoch`. Evaluation gives each process every world_size-th image of the
    table, in order, for `Context.gather` to put together."""
    ctx = ctx or Context()
    if not train:
        if len(part) < ctx.world_size:
            raise ConfigError(
                f"{len(part)} validation images for {ctx.world_size} processes: start fewer"
            )
        part = part.iloc[ctx.rank :: ctx.world_size]
    images, problems = decode_all(part["path"].tolist(), pre, cfg.progress)
    if problems:
        split = "training" if train else "validation"
        log.warning("skipping %d unreadable %s images: %s", len(problems), split, problems[:3])
        keep = [i for i, im in enumerate(images) if im is not None]
        part, images = part.iloc[keep].reset_index(drop=True), [images[i] for i in keep]
    # Each process its own augmentation and metadata-dropout stream; rank 0 keeps the seed
    # of a one-process run, so that run's numbers do not change.
    seed = cfg.seed + ctx.rank
    augment = Augment.for_config(pre, cfg) if train and cfg.augment else None
    if augment is not None and ctx.rank:
        augment.rng.seed(seed)
    data = ImageTable(
        part,
        classes,
        pre,
        images,
        augment,
        cfg.meta_dropout if train else 0.0,
        seed,
        cfg.metadata_fields,
        cfg.meta_drop_all if train else 0.0,
    )
    sampler = None
    if train and cfg.balance == "sampler":
        weights = class_weights(data.labels(), len(classes), cfg.balance_power)[data.labels()]
        if ctx.distributed:
            sampler = WeightedShare(weights, ctx.rank, ctx.world_size, cfg.seed)
        else:
            sampler = WeightedRandomSampler(weights, len(data), replacement=True)
    elif train and ctx.distributed:
        sampler = DistributedSampler(data, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.seed)
    per_process = len(sampler) if sampler is not None else len(data)
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and per_process > cfg.batch_size,
        num_workers=cfg.workers,
        worker_init_fn=seed_worker if cfg.workers else None,
        persistent_workers=cfg.workers > 0,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
