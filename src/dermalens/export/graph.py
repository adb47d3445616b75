"""ONNX graph work done once, offline, that leaves the answers unchanged.

- `freeze_pads`: TF-style "same" padding (EfficientNet-Lite from timm) is exported as a
  chain of Shape / Gather / Ceil / Sub / Pad nodes evaluated on every call. The input's
  height and width are fixed by the bundle, so the pads are constants: computing them once
  removes the shape arithmetic and lets ONNX Runtime fuse each Pad into its Conv.
- `optimise_onnx`: ONNX Runtime's graph optimisations, saved to a file so a session
  loads the finished graph instead of re-optimising at every start.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dermalens.runtime.engines import session_options

SAVED_LEVEL = "extended"  # offline level: "all" adds layout changes tied to this CPU's ISA


def freeze_pads(src: str | Path, dst: str | Path, height: int, width: int) -> int:
    """Replace computed Pad amounts by constants for a fixed input size; returns how many.

    The pads are read from a run at batch 1 and batch 2 and must agree (they may depend
    on height and width only); nodes left without consumers are removed.
    """
    import onnx  # not in the core install
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
    import onnx  # not in the core install

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
