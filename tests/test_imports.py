"""Imports inside ``swinunetr_lib`` run one way (issue #17 item 4).

model and data -> training -> fine-tuning -> inference -> evaluation -> notebooks: a module may import
modules of its own layer or of earlier layers, never of a later one, and no chain of imports comes back
to where it started. Imports are read with ``ast`` from the source (also the ones inside functions, which
Python runs late but which still tie the modules together; not the ones under ``if TYPE_CHECKING:``, which
never run), so nothing is imported to check them.
The subpackage ``swinunetr_lib/data`` counts as one module, ``data``; ``__init__`` only re-exports lazily.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "swinunetr_lib"

# Each module in exactly one layer, the layers in the order imports may run (a module imports from its
# own layer and the ones above it). A new module must be placed here.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations", {"utils", "config", "paths", "cpu_bf16", "distributed", "window_attention", "loading",
                     "example_data"}),
    ("model and data", {"data", "task_presets", "ssl_model", "ssl_transforms", "ssl_data", "prepared_data",
                        "losses", "finetune_model", "segmentation"}),
    ("training", {"train", "pretrain", "batch_stream", "checkpointing", "metrics_log"}),
    ("fine-tuning", {"finetune", "finetune_data"}),
    ("inference", {"infer", "export"}),
    ("evaluation", {"evaluate", "finetune_run", "probe", "baselines", "viz", "viz3d", "viz_niivue", "viz_metrics"}),
    ("notebooks", {"notebooks", "exercises", "workshop", "label_efficiency", "precomputed", "bench", "bench_common",
                   "bench_data", "bench_finetune", "bench_infer"}),
]
# Backward imports still to be removed, each with the reason it is there; the test fails once one is gone,
# so this list only shrinks.
KNOWN_BACKWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """``swinunetr_lib/infer.py`` -> ``infer``; anything under ``swinunetr_lib/data/`` -> ``data``."""
    parts = path.relative_to(package).with_suffix("").parts
    return parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:`` (imports for annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(source: str, module_path: tuple[str, ...], known: set[str]) -> list[tuple[str, int]]:
    """``(module, line)`` for every import of a module of the package in ``source``.

    ``module_path`` is the importing file's package path below ``swinunetr_lib`` (``()`` for a top-level
    module, ``("data",)`` for ``data/cohort.py``); relative and absolute (``swinunetr_lib.x``) imports count,
    at any depth of the file (inside functions too), but not those under ``if TYPE_CHECKING:``, which never
    run. Only names in ``known`` are reported, in the order of their lines.
    """
    found: list[tuple[str, int]] = []

    def add(dotted: list[str], line: int) -> None:
        if dotted and dotted[0] in known:
            found.append((dotted[0], line))

    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "swinunetr_lib":
                    add(parts[1:], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "swinunetr_lib":
                    continue
                base = parts[1:]
            else:
                if node.level - 1 > len(module_path):
                    continue  # above the package
                base = list(module_path[:len(module_path) - (node.level - 1)])
                base += node.module.split(".") if node.module else []
            if base:
                add(base, node.lineno)
            else:  # "from . import distributed": the names are the modules
                for alias in node.names:
                    add([alias.name], node.lineno)
    return sorted(found, key=lambda f: f[1])


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """``{module: {imported module: "file:line" of the first such import}}`` of the package, self-imports
    (``data`` importing ``data``) left out."""
    files = [p for p in sorted(package.rglob("*.py")) if p.name != "__init__.py" or p.parent != package]
    known = {module_name(p, package) for p in files}
    graph: dict[str, dict[str, str]] = {m: {} for m in known}
    for path in files:
        me = module_name(path, package)
        sub = path.relative_to(package).parent.parts
        for other, line in imported_modules(path.read_text(), sub, known):
            if other != me:
                graph[me].setdefault(other, f"{path.relative_to(package.parent)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or ``None`` (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, {})):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)) is not None:
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)) is not None:
            return cycle
    return None


def layer_violations(graph: dict[str, dict[str, str]], layers: list[tuple[str, set[str]]] = LAYERS,
                     allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Each import from a later layer into an earlier one (but the ``allowed`` pairs), as a sentence naming
    the file and line."""
    rank = {m: (i, name) for i, (name, mods) in enumerate(layers) for m in mods}
    out = []
    for m, targets in sorted(graph.items()):
        for n, where in sorted(targets.items()):
            if m in rank and n in rank and rank[n][0] > rank[m][0] and (m, n) not in (allowed or {}):
                out.append(f"{where}: {m} ({rank[m][1]}) imports {n} ({rank[n][1]}), a later layer")
    return out


# ------------------------------------------------------------------------------------------ the package
@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, str]]:
    return import_graph()


def test_every_module_has_a_layer(graph):
    placed = [m for _, mods in LAYERS for m in mods]
    assert len(placed) == len(set(placed)), "a module is listed in two layers"
    unplaced = sorted(set(graph) - set(placed))
    assert not unplaced, f"swinunetr_lib modules in no layer: {unplaced}; add each to LAYERS in {__file__}"
    gone = sorted(set(placed) - set(graph))
    assert not gone, f"LAYERS lists modules that do not exist: {gone}"


def test_imports_follow_the_layer_order(graph):
    wrong = layer_violations(graph, allowed=KNOWN_BACKWARD)
    assert not wrong, "imports against the order model and data -> training -> fine-tuning -> inference -> " \
                      "evaluation -> notebooks:\n" + "\n".join(wrong)
    stale = [pair for pair in KNOWN_BACKWARD if pair[1] not in graph.get(pair[0], {})]
    assert not stale, f"remove {stale} from KNOWN_BACKWARD: the import is gone"


def test_there_is_no_import_cycle(graph):
    cycle = find_cycle(graph)
    where = "" if cycle is None else "; ".join(f"{a} -> {b} at {graph[a][b]}" for a, b in zip(cycle, cycle[1:]))
    assert cycle is None, f"import cycle {' -> '.join(cycle or [])}: {where}"


def test_the_graph_sees_the_imports_that_tie_the_layers(graph):
    """The parser is not blind: imports known to exist (top-level, inside functions, from the data
    subpackage, ``from . import x``) are in the graph."""
    assert "train" in graph["finetune"] and "segmentation" in graph["finetune"]
    assert "infer" in graph["evaluate"] and "segmentation" in graph["infer"]
    assert "infer" in graph["export"]
    assert "data" in graph["task_presets"] and "utils" in graph["data"] and "example_data" in graph["data"]
    assert "distributed" in graph["train"]  # "from . import distributed as ddp"
    assert "notebooks" in graph["label_efficiency"]  # imported inside a function
    assert "finetune" not in graph["infer"] and "evaluate" not in graph["finetune"]  # issue #17's cycle


# ------------------------------------------------------------------------------------------ the checker
def test_the_checker_finds_a_cycle_and_a_backward_import_in_made_up_code():
    known = {"a", "b", "c", "data"}
    assert imported_modules("from .b import x\nimport swinunetr_lib.c\n", (), known) == [("b", 1), ("c", 2)]
    assert imported_modules("def f():\n    from ..a import y\n", ("data",), known) == [("a", 2)]
    assert imported_modules("from . import b, os_path\nfrom .data.labels import z\n", (), known) == [
        ("b", 1), ("data", 2)]
    assert imported_modules("import numpy\nfrom os import path\n", (), known) == []
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nelse:\n    from .b import B\n"
    assert imported_modules(typing_only, (), known) == [("b", 5)]

    g = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:3"}, "c": {"a": "c.py:9"}}
    assert find_cycle(g) == ["a", "b", "c", "a"]
    g["c"] = {}
    assert find_cycle(g) is None
    layers = [("low", {"a"}), ("mid", {"b"}), ("high", {"c"})]
    backward = {"a": {"b": "a.py:1"}, "b": {}, "c": {"a": "c.py:2"}}
    assert layer_violations(backward, layers) == ["a.py:1: a (low) imports b (mid), a later layer"]
    assert layer_violations(backward, layers, allowed={("a", "b"): "why"}) == []
