"""Training on several processes (torchrun, DDP over gloo) and the device setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from dermalens.config import ConfigError, make_config
from dermalens.training.distributed import Context, WeightedShare, pick_device


def test_weighted_shares_together_are_one_weighted_stream():
    weights = torch.tensor([0.1, 0.1, 0.1, 0.1, 5.0, 5.0, 1.0, 1.0])
    whole = WeightedShare(weights, 0, 1, seed=3)
    shares = [WeightedShare(weights, rank, 2, seed=3) for rank in (0, 1)]
    assert [len(s) for s in shares] == [4, 4]
    interleaved = [i for pair in zip(*(list(s) for s in shares), strict=True) for i in pair]
    assert interleaved == list(whole)  # the class balance does not depend on the processes
    first = list(shares[0])
    shares[0].set_epoch(1)
    assert list(shares[0]) != first  # each epoch draws anew, the same on every run
    assert list(WeightedShare(weights, 0, 2, seed=3)) == first
    assert list(shares[0]) == list(shares[0])  # the same epoch draws the same again
    many = Counter(list(WeightedShare(weights.repeat(500), 1, 3, seed=0)))
    heavy = sum(n for i, n in many.items() if i % 8 in (4, 5))
    assert heavy / sum(many.values()) == pytest.approx(10 / 12.4, abs=0.03)


def test_loaders_give_each_process_its_share(tiny_ham):
    """make_loader with rank 0 and 1 of 2 (no process group needed): training draws cover
    the training part, validation shards partition the val part."""
    from dermalens.data.loaders import load_dataset
    from dermalens.data.splits import grouped_split
    from dermalens.preprocess import Preprocessing
    from dermalens.training.dataset import make_loader

    table = grouped_split(load_dataset(tiny_ham), (0.7, 0.15, 0.15), 0)
    classes = sorted(table["label"].unique())
    parts = {s: table[table["split"] == s].reset_index(drop=True) for s in ("train", "val")}
    pre = Preprocessing(height=48, width=64)
    for balance in ("loss", "sampler"):
        cfg = make_config(balance=balance, workers=0, progress=False, height=48, width=64)
        drawn = []
        for rank in (0, 1):
            ctx = Context(rank=rank, world_size=2)
            loader = make_loader(parts["train"], classes, pre, cfg, True, ctx)
            loader.sampler.set_epoch(0)
            drawn.append(list(loader.sampler))
        assert len(drawn[0]) == len(drawn[1]) == -(-len(parts["train"]) // 2)
        if balance == "loss":  # a shuffle of the whole part, split between the processes
            assert set(drawn[0]) | set(drawn[1]) == set(range(len(parts["train"])))
    cfg = make_config(workers=0, progress=False)
    shards = [
        make_loader(parts["val"], classes, pre, cfg, False, Context(rank=r, world_size=2))
        for r in (0, 1)
    ]
    ids = [list(s.dataset.table["image_id"]) for s in shards]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(parts["val"]["image_id"])


def test_one_process_context_is_a_world_of_one():
    ctx = Context()
    assert ctx.main and not ctx.distributed
    assert ctx.broadcast(3) == 3 and ctx.gather("a") == ["a"] and ctx.total(2.0, 4) == [2.0, 4]
    model = torch.nn.Linear(2, 2)
    assert ctx.wrap(model) is model
    launch = ctx.launch(make_config(batch_size=16, lr=0.002))
    assert launch["world_size"] == 1 and launch["effective_batch_size"] == 16
    assert launch["lr"] == 0.002 and launch["lr_scaled_with_world_size"] is False


def test_device_setting_is_checked():
    with pytest.raises(ConfigError, match="device='tpu': must be one of"):
        make_config(overrides=["device=tpu"])
    with pytest.raises(ConfigError, match="amp='fp8': must be one of"):
        make_config(overrides=["amp=fp8"])
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda': PyTorch sees no CUDA GPU"):
            pick_device("cuda")
        if not torch.backends.mps.is_available():
            assert pick_device("auto").type == "cpu"


# Each process records a digest of its network and weight average as the run finishes
# (after the last epoch, before rank 0 loads best.pt for the bundle).
SCRIPT = """
import hashlib, json, os, sys
import torch
from dermalens.cli import main
from dermalens.training import train as t

def digest(module):
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

finish = t.Run.finish
def recorded(self, history):
    out = {"model": digest(self.model), "ema": digest(self.ema), "rank": self.ctx.rank,
           "world_size": self.ctx.world_size, "epochs": len(history)}
    with open(os.path.join(sys.argv[1], f"rank{self.ctx.rank}.json"), "w") as fh:
        json.dump(out, fh)
    return finish(self, history)
t.Run.finish = recorded
sys.exit(main(["train", *sys.argv[2:]]))
"""


def _digest(state: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(state.items()):
        h.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _torchrun(tmp_path: Path, digests: Path, *settings: str) -> str:
    digests.mkdir(exist_ok=True)
    script = tmp_path / "ranks.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(script), str(digests), *settings]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _ranks_agree(digests: Path, run: Path) -> None:
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["model"] == ranks[1]["model"]
    assert ranks[0]["ema"] == ranks[1]["ema"]
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert _digest(last["model"]) == ranks[0]["model"]
    assert _digest(last["ema"]) == ranks[0]["ema"]


@pytest.mark.slow
def test_two_processes_train_one_run(tiny_ham, tmp_path):
    out, run = tmp_path / "runs", tmp_path / "runs" / "ddp"
    settings = [f"data={tiny_ham}", f"out={out}", "name=ddp", "model=plain_cnn", "epochs=1"]
    settings += ["batch_size=8", "height=64", "width=80", "workers=0", "pretrained=none"]
    settings += ["progress=False", "calibrate=False", "balance=sampler", "device=cpu"]
    stdout = _torchrun(tmp_path, tmp_path / "first", *settings)
    assert stdout.count("epoch 1/1 ") == 1  # rank 0 alone reports
    _ranks_agree(tmp_path / "first", run)
    for name in ("config.json", "split.csv", "last.pt", "best.pt", "log.csv", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "bundle" / "bundle.json").is_file()
    assert (run / "eval-test" / "metrics.json").is_file()
    assert list(pd.read_csv(run / "log.csv")["epoch"]) == [1]
    launch = json.loads((run / "config.json").read_text())["launch"]
    assert launch["world_size"] == 2 and launch["backend"] == "gloo"
    assert launch["batch_size_per_process"] == 8 and launch["effective_batch_size"] == 16
    assert launch["lr"] == 0.001 and launch["lr_scaled_with_world_size"] is False
    bundle = json.loads((run / "bundle" / "bundle.json").read_text())
    assert bundle["train_config"]["launch"] == launch
    assert make_config(run / "config.json").balance == "sampler"  # reusable as a config file

    stdout = _torchrun(tmp_path, tmp_path / "resumed", f"resume={run}", "epochs=2")
    assert stdout.count("epoch 2/2 ") == 1
    _ranks_agree(tmp_path / "resumed", run)
    assert list(pd.read_csv(run / "log.csv")["epoch"]) == [1, 2]
