"""Imports inside ``swinunetr_lib`` run one way: a folder imports only folders on lower floors (issue #24).

The floors, bottom up::

    ground       config.py, paths.py, utils/        (import nothing above them)
    stages       data/  models/  train/  viz/        (never import each other)
    methods      pretrain/  finetune/                (never import each other; they meet only in models/)
    inference    infer/
    lessons      notebooks/
    tools        experiments/  bench/                (never import each other)

A file belongs to the folder it is created in (its first path part below ``swinunetr_lib``), so a new file is
placed by where it is written; a new top-level folder or module must be given a floor here. Imports are read
with ``ast`` from the source (also the ones inside functions, which Python runs late but which still tie the
folders together; not the ones under ``if TYPE_CHECKING:``, which never run), so nothing is imported to check
them. Inside a folder, files may import each other, but no chain of imports between files comes back to where
it started.
"""
from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "swinunetr_lib"

# Each top-level folder or module of the package on exactly one floor, bottom first. On the ground floor the
# three may import each other; on every other floor a folder imports only itself and lower floors.
FLOORS: list[tuple[str, set[str]]] = [
    ("ground", {"__init__", "config", "paths", "utils"}),
    ("stages", {"data", "models", "train", "viz"}),
    ("methods", {"pretrain", "finetune"}),
    ("inference", {"infer"}),
    ("lessons", {"notebooks"}),
    ("tools", {"experiments", "bench"}),
]
GROUND = FLOORS[0][0]


def unit_of(path: Path, package: Path = PACKAGE) -> str:
    """``swinunetr_lib/infer/predict.py`` -> ``infer``; ``swinunetr_lib/config.py`` -> ``config``."""
    return path.relative_to(package).with_suffix("").parts[0]


def file_module(path: Path, package: Path = PACKAGE) -> str:
    """``swinunetr_lib/infer/predict.py`` -> ``infer.predict``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


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


def imported_modules(source: str, module_path: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(dotted module below swinunetr_lib, line)`` for every import of the package in ``source``.

    ``module_path`` is the importing file's package path below ``swinunetr_lib`` (``()`` for a top-level
    module, ``("infer",)`` for ``infer/predict.py``); relative and absolute (``swinunetr_lib.x``) imports count,
    at any depth of the file (inside functions too), but not those under ``if TYPE_CHECKING:``. ``from . import
    x`` reports ``x`` below the package (a module, or a name of ``__init__``: either way, that folder).
    """
    found: list[tuple[str, int]] = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "swinunetr_lib" and len(parts) > 1:
                    found.append((".".join(parts[1:]), node.lineno))
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
                found.append((".".join(base), node.lineno))
            else:  # "from . import config" / "from swinunetr_lib import x": the names are the modules
                found.extend((alias.name, node.lineno) for alias in node.names)
    return sorted(found, key=lambda f: f[1])


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """``{file module: {imported module: "file:line" of the first such import}}``, self-imports left out."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted(package.rglob("*.py")):
        me = file_module(path, package)
        sub = path.relative_to(package).parent.parts
        targets = graph.setdefault(me, {})
        for other, line in imported_modules(path.read_text(), sub):
            if other != me:
                targets.setdefault(other, f"{path.relative_to(package.parent)}:{line}")
    return graph


def floor_violations(graph: dict[str, dict[str, str]], floors: list[tuple[str, set[str]]] = FLOORS) -> list[str]:
    """Each import of a folder on the same floor (but on the ground floor) or a higher one, as a sentence
    naming the file and line."""
    rank = {unit: (i, name) for i, (name, units) in enumerate(floors) for unit in units}
    out = []
    for me, targets in sorted(graph.items()):
        a = me.split(".")[0]
        for other, where in sorted(targets.items()):
            b = other.split(".")[0]
            if a == b or a not in rank or b not in rank:
                continue
            (ra, fa), (rb, fb) = rank[a], rank[b]
            if rb > ra or (rb == ra and fa != floors[0][0]):
                how = "a higher floor" if rb > ra else "a folder on its own floor"
                out.append(f"{where}: {a}/ ({fa}) imports {b} ({fb}), {how}")
    return out


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of ``graph``, or ``None`` (depth-first search). Imports of a folder
    (``from . import x`` of its ``__init__``) count as imports of that folder's ``__init__``."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, {})):
            if n not in graph:
                continue  # a name re-exported by a package, not a file
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


# ------------------------------------------------------------------------------------------ the package
@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, str]]:
    return import_graph()


def test_every_folder_and_top_level_module_has_a_floor(graph):
    placed = [u for _, units in FLOORS for u in units]
    assert len(placed) == len(set(placed)), "a folder is listed on two floors"
    units = {m.split(".")[0] for m in graph}
    unplaced = sorted(units - set(placed))
    assert not unplaced, f"swinunetr_lib folders or modules on no floor: {unplaced}; add each to FLOORS in {__file__}"
    gone = sorted(set(placed) - units)
    assert not gone, f"FLOORS lists folders that do not exist: {gone}"


def test_at_most_four_top_level_modules_besides_the_folders():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 4, modules


def test_folders_import_only_lower_floors(graph):
    wrong = floor_violations(graph)
    assert not wrong, "imports against the floors ground -> data, models, train, viz -> pretrain, finetune -> " \
                      "infer -> notebooks -> experiments, bench:\n" + "\n".join(wrong)


def test_there_is_no_import_cycle(graph):
    cycle = find_cycle(graph)
    where = "" if cycle is None else "; ".join(f"{a} -> {b} at {graph[a][b]}" for a, b in itertools.pairwise(cycle))
    assert cycle is None, f"import cycle {' -> '.join(cycle or [])}: {where}"


def test_the_graph_sees_the_imports_that_tie_the_floors(graph):
    """The parser is not blind: imports known to exist (top-level, inside functions, ``from ..utils import
    distributed as ddp``) are in the graph."""
    assert "train.loop" in graph["finetune.run"] and "finetune.sliding_window" in graph["infer.predict"]
    assert "infer.predict" in graph["infer.evaluation"] and "infer.predict" in graph["infer.export"]
    assert "utils.distributed" in graph["train.loop"]  # "from ..utils import distributed as ddp"
    assert "data.pretrain_volumes" in graph["data.prepare"]  # the shared chain, no longer in pretrain/
    assert "models.swin_unetr" in graph["pretrain.run"]  # pretrain and finetune meet in models/


# ------------------------------------------------------------------------------------------ the checker
def test_the_checker_reads_imports_in_made_up_code():
    assert imported_modules("from .b import x\nimport swinunetr_lib.c.d\n", ("a",)) == [("a.b", 1), ("c.d", 2)]
    assert imported_modules("def f():\n    from ..a.m import y\n", ("data",)) == [("a.m", 2)]
    assert imported_modules("from ..utils import ddp, files\n", ("train",)) == [("utils", 1)]
    assert imported_modules("from . import config, paths\n", ()) == [("config", 1), ("paths", 1)]
    assert imported_modules("import numpy\nfrom os import path\n", ()) == []
    typing_only = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
                   "else:\n    from .b import B\n")
    assert imported_modules(typing_only, ("x",)) == [("x.b", 5)]


def test_the_checker_finds_a_cycle_and_imports_against_the_floors_in_made_up_code():
    g = {"a.x": {"a.y": "a/x.py:1"}, "a.y": {"a.z": "a/y.py:3"}, "a.z": {"a.x": "a/z.py:9"}}
    assert find_cycle(g) == ["a.x", "a.y", "a.z", "a.x"]
    g["a.z"] = {}
    assert find_cycle(g) is None
    floors = [("ground", {"g", "h"}), ("low", {"a", "b"}), ("high", {"c"})]
    graph = {"g.m": {"h.n": "g/m.py:1"},          # ground imports ground: allowed
             "a.m": {"b.n": "a/m.py:2", "g.m": "a/m.py:3", "a.k": "a/m.py:4"},  # a folder on its own floor
             "c.m": {"a.m": "c/m.py:5"},          # down: allowed
             "b.n": {"c.m": "b/n.py:6"}}          # up
    assert floor_violations(graph, floors) == [
        "a/m.py:2: a/ (low) imports b (low), a folder on its own floor",
        "b/n.py:6: b/ (low) imports c (high), a higher floor"]


STAGES = {"utils", "data", "models", "train", "viz", "pretrain", "finetune", "infer"}


def checkout_reaches(source: str) -> list[int]:
    """Lines of ``source`` that use ``REPO_ROOT`` or name a folder of the repository (``data_manifests``,
    ``notebooks``, ``docs / "results"``) in code; docstrings and comments do not count."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "REPO_ROOT":
            lines.add(node.lineno)
        elif isinstance(node, ast.ImportFrom) and any(a.name == "REPO_ROOT" for a in node.names):
            lines.add(node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            v = node.value
            if v in ("data_manifests", "notebooks") or "data_manifests/" in v or "docs/results" in v:
                lines.add(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.right, ast.Constant) and node.right.value == "results" \
                and isinstance(node.left, ast.BinOp) and isinstance(node.left.right, ast.Constant) \
                and node.left.right.value == "docs":
            lines.add(node.lineno)
    return sorted(lines)


def test_stages_do_not_reach_into_the_checkout():
    """Only paths.py, notebooks/ and experiments/ know the repository: a stage that read ``REPO_ROOT``, ``docs/``,
    ``data_manifests/`` or ``notebooks/`` would break under a non-editable ``pip install .`` (issue #24)."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{n}" for path in sorted(PACKAGE.rglob("*.py"))
             if unit_of(path) in STAGES for n in checkout_reaches(path.read_text())]
    assert not found, "stages reaching into the checkout: " + ", ".join(found)
    made_up = ('"""REPO_ROOT in a docstring"""\nfrom ..paths import REPO_ROOT\nx = REPO_ROOT / "docs" / "results"\n'
               'y = "data_manifests/registry.json"  # data_manifests\nz = ("configs", "docs")\n')
    assert checkout_reaches(made_up) == [2, 3, 4]
