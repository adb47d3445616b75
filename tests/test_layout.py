"""The library's shape: no import cycles, imports at module level (with a stated reason when
not), small modules with a docstring. Parses the source; imports nothing of dermalens."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dermalens"
MAX_LINES = 360  # "a few hundred lines" (ARCHITECTURE.md)


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts}


def _resolve(node: ast.ImportFrom | ast.Import, here: str, is_package: bool) -> list[str]:
    """The dermalens modules an import statement depends on: `from package import module`
    names the module, `from package import name` the package."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:
        parts = here.split(".") if is_package else here.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if not base.startswith("dermalens"):
        return []
    found = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return sorted(found & MODULES.keys())


def imports(name: str) -> list[tuple[str, ast.stmt, bool]]:
    """(imported module, statement, at module level) for every dermalens import in `name`."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _resolve(node, name, path.name == "__init__.py"):
                if target != name:
                    out.append((target, node, id(node) in top))
    return out


def graph() -> dict[str, set[str]]:
    return {name: {t for t, _, _ in imports(name)} for name in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_names_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_inside_functions_say_why():
    """An import inside a function is for an optional heavy dependency (torch, timm, onnx,
    ...) that a lighter install lacks; the line, or the one above it, says so."""
    unexplained = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
                here, above = lines[node.lineno - 1], node.lineno - 2
                block = [here]
                while lines[above].strip().startswith(("import ", "from ")):
                    block.append(lines[above])  # one comment may explain a block of imports
                    above -= 1
                if not any("#" in line for line in block) and not lines[above].strip().startswith(
                    "#"
                ):
                    unexplained.append(f"{name}:{node.lineno}: {here.strip()}")
    assert not unexplained, "imports inside functions without a reason:\n" + "\n".join(unexplained)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small_and_documented(name):
    path = MODULES[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"{path}: {len(text.splitlines())} lines"
    assert ast.get_docstring(ast.parse(text)), f"{path}: no module docstring"


def test_no_two_modules_share_a_name():
    stems: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            stems.setdefault(path.stem, []).append(name)
    shared = {s: n for s, n in stems.items() if len(n) > 1}
    assert not shared, f"modules with the same file name: {shared}"


TORCH_MODULES = ("dermalens.networks", "dermalens.training", "dermalens.export.to_onnx")


def test_only_training_and_export_import_torch_at_module_level():
    """The serving install has no PyTorch: nothing outside training, the networks and the
    ONNX export may load torch (or timm) when it is imported, directly or through another
    dermalens module."""
    top: dict[str, set[str]] = {}
    torchy = set()
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if module and module.split(".")[0] in ("torch", "timm", "torchvision"):
                    torchy.add(name)
        top[name] = {t for t, _, at_top in imports(name) if at_top}
    grew = True
    while grew:
        new = {n for n, targets in top.items() if n not in torchy and targets & torchy}
        torchy |= new
        grew = bool(new)
    wrong = sorted(n for n in torchy if not n.startswith(TORCH_MODULES))
    assert not wrong, f"these modules load torch on import: {wrong}"
