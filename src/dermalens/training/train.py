"""Transfer-learning training: `dermalens train [config.json] key=value ...`.

On the CPU, one GPU (`device=`) or several processes: `torchrun --nproc_per_node=N -m
dermalens.cli train ...` (see `training.distributed`). A run folder holds the resolved
config, the split CSV, `last.pt` (every epoch, for `resume=`), `best.pt` (best validation
balanced accuracy), `log.csv`, `curves.png` and, at the end, a model bundle evaluated on
the test part. Under torchrun only rank 0 writes it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dermalens.bundle import Bundle, load_bundle
from dermalens.config import LAUNCH, ConfigError, TrainConfig
from dermalens.data.dedupe import duplicate_extras
from dermalens.data.loaders import load_dataset
from dermalens.data.splits import check_no_leak, grouped_split, load_split, save_split
from dermalens.evaluation.calibrate import calibrate_bundle
from dermalens.evaluation.evaluate import record_test
from dermalens.evaluation.metrics import classification_metrics, summary
from dermalens.files import atomic_write_text
from dermalens.networks import build_model
from dermalens.preprocess import Preprocessing
from dermalens.training import distributed
from dermalens.training.dataset import make_loader
from dermalens.training.mixing import mix_batch
from dermalens.training.package import bundle_from_model
from dermalens.training.steps import (
    autocast,
    class_weights,
    lr_factor,
    predict_probs,
    resume_checkpoint,
    save_atomic,
    save_snapshot,
    to_device,
    update_ema,
    write_log,
)

log = logging.getLogger(__name__)


class Run:
    """One training run: data, model, optimiser and the run folder (this process's part of
    it under torchrun: `self.ctx` says which)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.resume_state = None
        if cfg.resume:
            cfg, self.dir, self.resume_state = resume_checkpoint(cfg)
            self.cfg = cfg
        else:
            name = cfg.name or f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.dir = Path(cfg.out) / name
            if (self.dir / "last.pt").exists():
                raise ConfigError(
                    f"run folder {self.dir} already holds a run: use resume= or a new name="
                )
        self.ctx = ctx = distributed.start(cfg)
        if not ctx.main:  # one progress bar, from rank 0
            self.cfg = cfg = dataclasses.replace(cfg, progress=False)
        self.launch = ctx.launch(cfg)
        self.saved_split = (self.dir / "split.csv").exists()
        ctx.barrier()  # every process has looked at the folder before rank 0 writes to it
        if ctx.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            config = {**cfg.to_dict(), LAUNCH: self.launch}
            atomic_write_text(self.dir / "config.json", json.dumps(config, indent=2))
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.mix != "none" and not (cfg.mix_alpha > 0 and 0 < cfg.mix_prob <= 1):
            raise ConfigError(
                f"mix={cfg.mix}: needs mix_alpha > 0 (got {cfg.mix_alpha}) and "
                f"0 < mix_prob <= 1 (got {cfg.mix_prob})"
            )
        self.mix_rng = np.random.default_rng(cfg.seed + ctx.rank)
        self.pre = Preprocessing(
            height=cfg.height, width=cfg.width, color_constancy=cfg.color_constancy
        )
        self._data()
        self._model()
        if ctx.rank:  # the weights start equal (DDP copies rank 0's); dropout masks differ
            torch.manual_seed(cfg.seed + ctx.rank)

    def _data(self) -> None:
        cfg = self.cfg
        dataset = load_dataset(cfg.data)
        self.source = dataset.source
        if cfg.classes:
            dataset = dataset.subset(cfg.classes)
        split_csv = self.dir / "split.csv"
        if cfg.split_file or self.saved_split:
            table = load_split(dataset, Path(cfg.split_file) if cfg.split_file else split_csv)
        else:
            table = grouped_split(dataset, cfg.split_fractions, cfg.split_seed)
        check_no_leak(table)
        if self.ctx.main:
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
        return make_loader(self.parts[split], self.classes, self.pre, self.cfg, train, self.ctx)

    def _model(self) -> None:
        cfg = self.cfg
        pretrained = "none" if self.resume_state else cfg.pretrained
        arch = (cfg.drop_rate, cfg.use_metadata, cfg.metadata_fields)
        self.model, self.weight_source = build_model(
            cfg.model, len(self.classes), pretrained, *arch
        )
        if self.resume_state:  # the weights come from the checkpoint; keep their origin
            self.weight_source = self.resume_state.get("weight_source", self.weight_source)
        try:
            self.model.freeze(cfg.train_stages)
        except ValueError as exc:
            raise ConfigError(f"{exc} (model={cfg.model})") from None
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model = self.model.to(self.ctx.device)
        self.ema = None
        if cfg.ema:
            if not 0 < cfg.ema < 1:
                raise ConfigError(f"ema={cfg.ema}: must be between 0 and 1 (0 = off)")
            self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ema_steps = 0
        trained = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in trained if p.ndim > 1]
        no_decay = [p for p in trained if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0},
            ],
            lr=cfg.lr,
        )
        fp16 = self.ctx.device.type == "cuda" and cfg.amp == "fp16"  # bf16 needs no scaling
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=fp16)

    def fit(self) -> Bundle:
        cfg = self.cfg
        train_loader = self._loader("train", train=True)
        val_loader = self._loader("val", train=False)
        labels = train_loader.dataset.labels()
        weights = (
            torch.tensor(
                class_weights(labels, len(self.classes), cfg.balance_power), dtype=torch.float32
            ).to(self.ctx.device)
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
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            start, best, stale, history = (
                state["epoch"] + 1,
                state["best"],
                state["stale"],
                state["history"],
            )
            log.info("resuming %s at epoch %d", self.dir, start + 1)
        self.net = self.ctx.wrap(self.model)
        for epoch in range(start, cfg.epochs):
            if stale >= cfg.patience:
                log.info("early stop: no val balanced-accuracy gain for %d epochs", stale)
                break
            t0 = time.time()
            train_loss = self._epoch(train_loader, loss_fn, schedule, epoch)
            y, p = self._validate(val_loader)
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
            # Every rank saw the same gathered predictions; rank 0's word settles it anyway.
            improved, best, stale = self.ctx.broadcast((improved, best, stale))
            if not self.ctx.main:
                continue
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
            if self.scaler.is_enabled():
                state["scaler"] = self.scaler.state_dict()
            if improved:
                save_atomic(state, self.dir / "best.pt")
            if cfg.snapshots:
                save_snapshot(state, row, self.dir / "snapshots")
            save_atomic(state, self.dir / "last.pt")
            write_log(history, self.dir)
            print(
                f"epoch {epoch + 1}/{cfg.epochs} loss={train_loss:.4f} val {summary(metrics)}"
                f"{'  *best*' if improved else ''}",
                flush=True,
            )
        return self.finish(history)

    def _epoch(self, loader: DataLoader, loss_fn, schedule, epoch: int) -> float:
        cfg, device = self.cfg, self.ctx.device
        self.net.train()
        if hasattr(loader.sampler, "set_epoch"):  # several processes: new draws each epoch
            loader.sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not cfg.progress
        )
        for x, meta, y in bar:
            mixed = cfg.mix != "none" and self.mix_rng.random() < cfg.mix_prob
            if mixed:
                x, meta, partner, lam = mix_batch(x, meta, cfg.mix, cfg.mix_alpha, self.mix_rng)
            x, meta = to_device(x, meta, cfg, device)
            y = y.to(device, non_blocking=True)
            with autocast(cfg, device):
                logits = self.net(x, meta if cfg.use_metadata else None)
            logits = logits.float()
            loss = loss_fn(logits, y)
            if mixed:
                loss = lam * loss + (1 - lam) * loss_fn(logits, y[partner])
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}: lower lr="
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()  # with fp16 off: plain backward and step
            self.scaler.step(self.optimizer)
            self.scaler.update()
            schedule.step()
            self.ctx.sync_buffers(self.model)
            if self.ema is not None:
                self.ema_steps += 1
                update_ema(self.ema, self.model, self.cfg.ema, self.ema_steps)
            total += loss.item() * len(y)
            count += len(y)
            bar.set_postfix(
                loss=f"{total / count:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}"
            )
        total, count = self.ctx.total(total, count)
        return total / max(1, count)

    def _validate(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities over the whole val part: each process predicts its shard
        (with the bare network: DDP's forward would wait for the others) and all gather."""
        model = self.ema or self.model
        y, p = predict_probs(model, loader, self.cfg, "val", self.ctx.device)
        shards = self.ctx.gather((y, p))
        return np.concatenate([s[0] for s in shards]), np.concatenate([s[1] for s in shards])

    def finish(self, history: list[dict]) -> Bundle:
        """Best checkpoint -> bundle in the run folder, evaluated on the test part.

        `history` is every epoch's log row, also those after the best. Rank 0 writes the
        bundle; the other processes wait for it and load it."""
        self.ctx.barrier()  # every process has finished training, and best.pt is on disk
        bundle = self._bundle(history) if self.ctx.main else None
        self.ctx.barrier()
        return load_bundle(self.dir / "bundle") if bundle is None else bundle

    def _bundle(self, history: list[dict]) -> Bundle:
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
        bundle.train_config[LAUNCH] = self.launch
        bundle.save_description()
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
    """Train per `cfg`; returns the run's evaluated bundle (on every process)."""
    try:
        return Run(cfg).fit()
    finally:
        distributed.stop()
