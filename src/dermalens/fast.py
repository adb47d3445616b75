"""Faster inference without changing the model's answers: graph work done once, offline.

    python -m dermalens.variants runs/x/bundle fp32 --data DATA --split-file runs/x/split.csv

- `freeze_pads`: TF-style "same" padding (EfficientNet-Lite from timm) is exported as a
  chain of Shape / Gather / Ceil / Sub / Pad nodes evaluated on every call. The input's
  height and width are fixed by the bundle, so the pads are constants: computing them once
  removes about 200 small nodes and lets ONNX Runtime fuse each Pad into its Conv.
- `optimise_onnx`: ONNX Runtime's graph optimisations, saved to a file so a session
  loads the finished graph instead of re-optimising at every start.
- `session_options`: the thread settings used everywhere (one place to change them).
- `normalise_into` / `normalise_fast`: the arithmetic of `preprocess.normalise`, bit for
  bit, channel-first and into a preallocated batch row: ~0.1 ms instead of ~1 ms.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dermalens.preprocess import Preprocessing, channel_planes

SAVED_LEVEL = "extended"  # offline level: "all" adds layout changes tied to this CPU's ISA


def cores() -> int:
    """CPU cores this process may use (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int = 0, level: str = "all", spinning: bool = True):
    """ORT session options: `threads` intra-op threads (0: every core), one inter-op thread.

    `spinning=False` makes idle ORT threads sleep at once instead of busy-waiting, which
    leaves the CPU to image-decoding threads running beside the model.
    """
    import onnxruntime as ort

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if level not in levels:
        raise ValueError(f"optimisation level {level!r} not in {list(levels)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[level]
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def freeze_pads(src: str | Path, dst: str | Path, height: int, width: int) -> int:
    """Replace computed Pad amounts by constants for a fixed input size; returns how many.

    The pads are read from a run at batch 1 and batch 2 and must agree (they may depend
    on height and width only); nodes left without consumers are removed.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    constant = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    pads = [n for n in graph.node if n.op_type == "Pad" and n.input[1] not in constant]
    if pads:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        for node in pads:
            probe.graph.output.append(onnx.ValueInfoProto(name=node.input[1]))
        session = ort.InferenceSession(
            probe.SerializeToString(),
            session_options(level="none"),
            providers=["CPUExecutionProvider"],
        )
        names = [node.input[1] for node in pads]
        values = []
        for batch in (1, 2):
            feeds = {
                i.name: np.zeros(
                    [batch, *[d if isinstance(d, int) else 1 for d in i.shape[1:]]],
                    np.float32,
                )
                for i in session.get_inputs()
            }
            feeds["image"] = np.zeros((batch, 3, height, width), np.float32)
            values.append(session.run(names, feeds))
        for node, a, b in zip(pads, *values):
            if not np.array_equal(a, b):
                raise ValueError(f"{node.name}: pads depend on the batch size; cannot freeze")
            name = f"{node.name}/frozen_pads"
            graph.initializer.append(numpy_helper.from_array(a.astype(np.int64), name))
            node.input[1] = name
        _drop_dead_nodes(graph)
    onnx.save(model, str(dst))
    return len(pads)


def _drop_dead_nodes(graph) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = needed
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)


def optimise_onnx(
    src: str | Path, dst: str | Path, height: int, width: int, level: str = SAVED_LEVEL
) -> Path:
    """Freeze pads, then save ONNX Runtime's optimised graph (at `level`) to `dst`."""
    import onnx
    import onnxruntime as ort

    dst = Path(dst)
    with tempfile.TemporaryDirectory(prefix="dermalens-opt-") as tmp:
        frozen = Path(tmp) / "frozen.onnx"
        freeze_pads(src, frozen, height, width)
        options = session_options(level=level)
        options.optimized_model_filepath = str(dst)
        ort.InferenceSession(str(frozen), options, providers=["CPUExecutionProvider"])
    # ORT drops the model's metadata when it writes the optimised graph; copy it back.
    source, saved = onnx.load(str(src), load_external_data=False), onnx.load(str(dst))
    del saved.metadata_props[:]
    saved.metadata_props.extend(source.metadata_props)
    onnx.save(saved, str(dst))
    return dst


def normalise_fast(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """`preprocess.normalise` (kept as a name for the benchmarks; there is one path)."""
    from dermalens.preprocess import normalise

    return normalise(image, pre)


def normalise_into(image: Image.Image, pre: Preprocessing, out: np.ndarray) -> np.ndarray:
    """Write `preprocess.normalise(image, pre)` into `out` (float32, 3 x H x W) in place.

    Same float32 operations in the same order ((x - mean) / std), so the values are equal
    bit for bit; only the intermediate copies are gone.
    """
    pixels = channel_planes(image, pre)
    np.subtract(pixels, np.asarray(pre.mean, np.float32)[:, None, None], out=out)
    np.divide(out, np.asarray(pre.std, np.float32)[:, None, None], out=out)
    return out


class SplitEngine:
    """Several single-threaded engines, each running a slice of the batch in its own
    thread. On few cores this can beat one engine with intra-op threads, which must meet
    at every layer; a batch of one runs on the first engine alone."""

    name = "split"

    def __init__(self, engines: list):
        from concurrent.futures import ThreadPoolExecutor

        self.engines = engines
        self.bundle = engines[0].bundle
        self.pool = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="split")

    def run(self, batch: np.ndarray, meta: np.ndarray | None = None):
        parts = min(len(self.engines), len(batch))
        if parts == 1:
            return self.engines[0].run(batch, meta)
        edges = np.linspace(0, len(batch), parts + 1).astype(int)
        jobs = [
            self.pool.submit(engine.run, batch[a:b], None if meta is None else meta[a:b])
            for engine, a, b in zip(self.engines, edges[:-1], edges[1:])
        ]
        outs = [job.result() for job in jobs]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def head(self):
        return self.engines[0].head()


def split_engine(engine, parts: int = 0) -> SplitEngine:
    """`parts` (0: one per core) single-threaded copies of an ONNX Runtime engine."""
    from dermalens.engine import OnnxEngine

    if not isinstance(engine, OnnxEngine):
        raise TypeError(f"only ONNX Runtime engines can be split, not {type(engine).__name__}")
    copies = [
        OnnxEngine(engine.bundle, 1, path=engine.model_path, spinning=engine.spinning)
        for _ in range(parts or cores())
    ]
    return SplitEngine(copies)


def freeze_bundle_pads(bundle_path: str | Path) -> int:
    """Freeze the pads of a bundle's `model.onnx` in place (bundles exported before export
    did it itself); returns how many Pad nodes were frozen. The answers do not change."""
    from dermalens.bundle import ONNX, load_bundle

    bundle = load_bundle(bundle_path)
    pre = bundle.preprocessing
    with tempfile.TemporaryDirectory(prefix="dermalens-freeze-", dir=bundle.path) as tmp:
        frozen = Path(tmp) / ONNX
        count = freeze_pads(bundle.file(ONNX), frozen, pre.height, pre.width)
        if count:
            os.replace(frozen, bundle.file(ONNX))
    if count:
        bundle.save_description()  # new onnx_sha256
    return count
