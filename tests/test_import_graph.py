"""The package's modules import each other without circles, and in layers.

Read from the source (``ast``), so an import inside a function counts as much as one at
the top: a circle through a deferred import still ties two modules into one unit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "dsmlr").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ``dsmlr`` that ``name`` (a module or a name in one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The dsmlr modules ``module`` imports, itself and its own packages left out (Python
    imports a module's packages before it anyway)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            target = _owner(name) if name.split(".")[0] == "dsmlr" else None
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _reaches(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read():
    # A parser that found nothing would pass every check below.
    assert "dsmlr.estimator" in GRAPH["dsmlr.cli.train"]  # a deferred import counts
    assert "dsmlr.comm.launcher" in GRAPH["dsmlr.comm.mpi"]
    assert len(GRAPH) > 50


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_circle(module):
    circle = [m for m in GRAPH[module] if module in _reaches(m)]
    assert not circle, f"{module} imports {circle}, which import {module} back"


# Lower layers never import upper ones: the numerics know nothing of training, the
# library nothing of its command line.
LAYERS = {
    "dsmlr.kernels": ("dsmlr.engines", "dsmlr.scoring", "dsmlr.estimator", "dsmlr.cli"),
    "dsmlr.comm": ("dsmlr.engines", "dsmlr.kernels", "dsmlr.estimator", "dsmlr.cli"),
    "dsmlr.objective": ("dsmlr.engines", "dsmlr.kernels", "dsmlr.estimator", "dsmlr.cli"),
    "dsmlr.engines": ("dsmlr.estimator", "dsmlr.distributed", "dsmlr.cli"),
    "dsmlr.io": ("dsmlr.engines", "dsmlr.estimator", "dsmlr.cli"),
}


@pytest.mark.parametrize("lower", sorted(LAYERS))
def test_layers(lower):
    members = [m for m in MODULES if m == lower or m.startswith(lower + ".")]
    for module in members:
        above = [m for m in _reaches(module) for top in LAYERS[lower]
                 if m == top or m.startswith(top + ".")]  # fmt: skip
        assert not above, f"{module} (in {lower}) reaches {sorted(set(above))}"


def test_mpi4py_is_imported_in_comm_only():
    for module, path in MODULES.items():
        if module.startswith("dsmlr.comm"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            assert not any(n.split(".")[0] == "mpi4py" for n in names), module
