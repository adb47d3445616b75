"""Every benchmark script still imports and has a `main`: none rots silently after a move.

Each `benchmarks/*.py` is loaded from its file (benchmarks/ on sys.path, as when it is run
as a script, so `from lowprec import ...` resolves); importing must not run it.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def test_the_benchmarks_are_found():
    names = {p.stem for p in SCRIPTS}
    assert {"lowprec", "speed", "int8_scan", "accuracy"} <= names, names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_imports_and_has_main(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    name = f"_benchmark_{script.stem}"
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    assert 'if __name__ == "__main__":' in script.read_text(), f"{script.name}: no main guard"
