"""PyTorch datasets over a dataset table: decoded images cached in RAM, metadata encoded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from dermalens import patient
from dermalens.imageio import ImageError, load_image
from dermalens.preprocess import Preprocessing, to_input
from dermalens.training.augment import Augment


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
    ):
        self.table = table.reset_index(drop=True)
        self.index = {c: i for i, c in enumerate(classes)}
        self.pre = pre
        self.images = images
        self.augment = augment
        self.meta_dropout = meta_dropout
        self.rng = np.random.default_rng()

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
        fields = {"age": row["age"], "sex": row["sex"], "site": row["site"]}
        if self.meta_dropout:
            fields = {
                k: (None if self.rng.random() < self.meta_dropout else v) for k, v in fields.items()
            }
        meta = torch.from_numpy(patient.encode(**fields))
        return x, meta, self.index[row["label"]]


def seed_worker(worker_id: int) -> None:
    """Give each loader worker its own augmentation stream (forked copies share one)."""
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    info.dataset.rng = np.random.default_rng(seed)
    if info.dataset.augment is not None:
        info.dataset.augment.rng.seed(seed)
