"""Transfer-learning training on the CPU: `dermalens train [config.json] key=value ...`.

A run folder holds the resolved config, the split CSV, `last.pt` (every epoch, for
`resume=`), `best.pt` (best validation balanced accuracy), `log.csv`, `curves.png` and,
at the end, a model bundle evaluated on the test part.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from dermalens.bundle import Bundle, load_bundle
from dermalens.config import ConfigError, TrainConfig, config_from_dict
from dermalens.data.dedupe import duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import check_no_leak, grouped_split, load_split, save_split
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.evaluation.evaluate import record_test
from dermalens.evaluation.metrics import classification_metrics, summary
from dermalens.evaluation.plots import plot_curves
from dermalens.files import atomic_write_text
from dermalens.networks import build_model
from dermalens.preprocess import Preprocessing
from dermalens.training.augment import Augment
from dermalens.training.dataset import ImageTable, decode_all, seed_worker
from dermalens.training.mixing import mix_batch
from dermalens.training.package import bundle_from_model
from dermalens.training.steps import (
    class_weights,
    lr_factor,
    predict_probs,
    save_atomic,
    update_ema,
)

log = logging.getLogger(__name__)


RESUME_OVERRIDES = ("epochs", "patience", "workers", "threads", "progress")


class Run:
    """One training run: data, model, optimiser and the run folder."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.resume_state = None
        if cfg.resume:
            last = Path(cfg.resume)
            last = last / "last.pt" if last.is_dir() else last
            if not last.is_file():
                raise ConfigError(f"resume={cfg.resume!r}: no last.pt there")
            self.resume_state = torch.load(last, map_location="cpu", weights_only=False)
            saved = config_from_dict(self.resume_state["config"])
            # A resumed run keeps its settings, except these, when given (not the default):
            # more epochs or patience extend a finished or early-stopped run.
            defaults = TrainConfig()
            for key in RESUME_OVERRIDES:
                if getattr(cfg, key) != getattr(defaults, key):
                    setattr(saved, key, getattr(cfg, key))
            saved.resume = cfg.resume
            self.cfg = cfg = saved
            self.dir = last.parent
        else:
            name = cfg.name or f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.dir = Path(cfg.out) / name
            if (self.dir / "last.pt").exists():
                raise ConfigError(
                    f"run folder {self.dir} already holds a run: use resume= or a new name="
                )
            self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.mix != "none" and not (cfg.mix_alpha > 0 and 0 < cfg.mix_prob <= 1):
            raise ConfigError(
                f"mix={cfg.mix}: needs mix_alpha > 0 (got {cfg.mix_alpha}) and "
                f"0 < mix_prob <= 1 (got {cfg.mix_prob})"
            )
        self.mix_rng = np.random.default_rng(cfg.seed)
        self.pre = Preprocessing(
            height=cfg.height, width=cfg.width, color_constancy=cfg.color_constancy
        )
        self._data()
        self._model()

    def _data(self) -> None:
        cfg = self.cfg
        dataset = load_dataset(cfg.data)
        self.source = dataset.source
        if cfg.classes:
            dataset = dataset.subset(cfg.classes)
        split_csv = self.dir / "split.csv"
        if cfg.split_file or split_csv.exists():
            table = load_split(dataset, Path(cfg.split_file) if cfg.split_file else split_csv)
        else:
            table = grouped_split(dataset, cfg.split_fractions, cfg.split_seed)
        check_no_leak(table)
        save_split(table, split_csv)
        if cfg.limit:  # smoke runs: a few images per class and split
            per_class = max(1, cfg.limit // table["label"].nunique())
            table = table.groupby(["split", "label"], group_keys=False).head(per_class)
        if cfg.exclude_problems:
            # Unreadable images are dropped when decoding (`_loader`); decoding every image
            # here as well would double the start-up time.
            bad = duplicate_extras(table)
            if bad:
                log.warning("excluding %d exact duplicate images", len(bad))
            table = table[~table["image_id"].isin(bad)]
        self.classes = sorted(table["label"].unique())
        self.parts = {
            split: table[table["split"] == split].reset_index(drop=True)
            for split in ("train", "val", "test")
        }
        if len(self.parts["train"]) == 0 or len(self.parts["val"]) == 0:
            raise ConfigError(f"data={cfg.data!r}: too few images for a train/val split")

    def _loader(self, split: str, train: bool) -> DataLoader:
        cfg, part = self.cfg, self.parts[split]
        images, problems = decode_all(part["path"].tolist(), self.pre, cfg.progress)
        if problems:
            log.warning("skipping %d unreadable %s images: %s", len(problems), split, problems[:3])
            keep = [i for i, im in enumerate(images) if im is not None]
            part, images = part.iloc[keep].reset_index(drop=True), [images[i] for i in keep]
        augment = Augment.for_config(self.pre, cfg) if train and cfg.augment else None
        data = ImageTable(part, self.classes, self.pre, images, augment, 0.2 if train else 0.0)
        sampler = None
        if train and cfg.balance == "sampler":
            weights = class_weights(data.labels(), len(self.classes), cfg.balance_power)
            sampler = WeightedRandomSampler(weights[data.labels()], len(data), replacement=True)
        return DataLoader(
            data,
            batch_size=cfg.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(data) > cfg.batch_size,
            num_workers=cfg.workers,
            worker_init_fn=seed_worker if cfg.workers else None,
            persistent_workers=cfg.workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def _model(self) -> None:
        cfg = self.cfg
        pretrained = "none" if self.resume_state else cfg.pretrained
        self.model, self.weight_source = build_model(
            cfg.model, len(self.classes), pretrained, cfg.drop_rate, cfg.use_metadata
        )
        if self.resume_state:  # the weights come from the checkpoint; keep their origin
            self.weight_source = self.resume_state.get("weight_source", self.weight_source)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if cfg.ema:
            if not 0 < cfg.ema < 1:
                raise ConfigError(f"ema={cfg.ema}: must be between 0 and 1 (0 = off)")
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema_steps = 0
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0},
            ],
            lr=cfg.lr,
        )

    def fit(self) -> Bundle:
        cfg = self.cfg
        train_loader = self._loader("train", train=True)
        val_loader = self._loader("val", train=False)
        labels = train_loader.dataset.labels()
        weights = (
            torch.tensor(
                class_weights(labels, len(self.classes), cfg.balance_power), dtype=torch.float32
            )
            if cfg.balance == "loss"
            else None
        )
        loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
        steps = len(train_loader)
        total, warmup = cfg.epochs * steps, int(cfg.warmup_epochs * steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, cfg.schedule)
        )
        start, best, stale, history = 0, -1.0, 0, []
        if self.resume_state:
            state = self.resume_state
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None:
                self.ema.load_state_dict(state.get("ema", state["model"]))
                self.ema_steps = state.get("ema_steps", 0)
            schedule.load_state_dict(state["scheduler"])
            start, best, stale, history = (
                state["epoch"] + 1,
                state["best"],
                state["stale"],
                state["history"],
            )
            log.info("resuming %s at epoch %d", self.dir, start + 1)
        for epoch in range(start, cfg.epochs):
            if stale >= cfg.patience:
                log.info("early stop: no val balanced-accuracy gain for %d epochs", stale)
                break
            t0 = time.time()
            train_loss = self._epoch(train_loader, loss_fn, schedule, epoch)
            y, p = predict_probs(self.ema or self.model, val_loader, cfg, "val")
            metrics = classification_metrics(y, p, self.classes)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_nll": metrics["nll"],
                "val_accuracy": metrics["accuracy"],
                "val_balanced_accuracy": metrics["balanced_accuracy"],
                "val_macro_auc": metrics["macro_auc"],
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": round(time.time() - t0, 1),
            }
            history.append(row)
            improved = metrics["balanced_accuracy"] > best
            best, stale = (metrics["balanced_accuracy"], 0) if improved else (best, stale + 1)
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "epoch": epoch,
                "best": best,
                "stale": stale,
                "history": history,
                "config": cfg.to_dict(),
                "classes": self.classes,
                "weight_source": self.weight_source,
            }
            if self.ema is not None:
                state["ema"], state["ema_steps"] = self.ema.state_dict(), self.ema_steps
            if improved:
                save_atomic(state, self.dir / "best.pt")
            if cfg.snapshots:
                self._save_snapshot(state, row)
            save_atomic(state, self.dir / "last.pt")
            self._write_log(history)
            print(
                f"epoch {epoch + 1}/{cfg.epochs} loss={train_loss:.4f} val {summary(metrics)}"
                f"{'  *best*' if improved else ''}",
                flush=True,
            )
        return self.finish(history)

    def _epoch(self, loader: DataLoader, loss_fn, schedule, epoch: int) -> float:
        cfg = self.cfg
        self.model.train()
        total, count = 0.0, 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress
        )
        for x, meta, y in bar:
            mixed = cfg.mix != "none" and self.mix_rng.random() < cfg.mix_prob
            if mixed:
                x, meta, partner, lam = mix_batch(x, meta, cfg.mix, cfg.mix_alpha, self.mix_rng)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = self.model(x, meta if cfg.use_metadata else None)
            logits = logits.float()
            loss = loss_fn(logits, y)
            if mixed:
                loss = lam * loss + (1 - lam) * loss_fn(logits, y[partner])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}: lower lr="
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            schedule.step()
            if self.ema is not None:
                self.ema_steps += 1
                update_ema(self.ema, self.model, self.cfg.ema, self.ema_steps)
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(
                loss=f"{total / count:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}"
            )
        return total / max(1, count)

    def _save_snapshot(self, state: dict, row: dict) -> None:
        """This epoch's weights (the EMA's when on) for weight averaging or snapshot ensembles."""
        folder = self.dir / "snapshots"
        folder.mkdir(exist_ok=True)
        keep = ("epoch", "config", "classes", "weight_source")
        snapshot = {"model": state.get("ema", state["model"]), "val": row}
        snapshot.update({k: state[k] for k in keep})
        save_atomic(snapshot, folder / f"e{state['epoch'] + 1:02d}.pt")

    def _write_log(self, history: list[dict]) -> None:
        with open(self.dir / "log.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

        plot_curves(history, self.dir / "curves.png")

    def finish(self, history: list[dict]) -> Bundle:
        """Best checkpoint -> bundle in the run folder, evaluated on the test part.

        `history` is every epoch's log row, also those after the best."""
        state = torch.load(self.dir / "best.pt", map_location="cpu", weights_only=False)
        self.model.load_state_dict(state.get("ema", state["model"]))
        bundle = bundle_from_model(
            self.model,
            self.dir / "bundle",
            self.classes,
            self.pre,
            self.cfg,
            self.weight_source,
            history=history,
            source=self.source,
        )
        if self.cfg.calibrate:
            calibrate_bundle(
                bundle.path,
                self.cfg.data,
                self.dir / "split.csv",
                "val",
                self.dir / "calibration",
                progress=self.cfg.progress,
            )
            bundle = load_bundle(bundle.path)
        if len(self.parts["test"]):
            result = record_test(bundle, self.parts["test"], self.dir, self.cfg.progress)
            bundle.metrics["split_seed"] = self.cfg.split_seed
            bundle.save_description()
            print(f"test: {summary(result.metrics)}", flush=True)
        return bundle


def train(cfg: TrainConfig) -> Bundle:
    """Train per `cfg`; returns the run's evaluated bundle."""
    return Run(cfg).fit()
