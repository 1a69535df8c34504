"""Run the project's notebooks with papermill, in order, with validated parameter files.

Usage (from the repository root)::

    python -m swinunetr_lib.notebooks run --params ci/params/smoke            # every notebook, smoke size
    python -m swinunetr_lib.notebooks run notebooks/02_ssl_pretraining.py --params ci/params/demo
    python -m swinunetr_lib.notebooks params notebooks/03_finetune_btcv.py   # show a notebook's parameters

``--params DIR`` holds one YAML file per notebook (``DIR/NN_topic.yml``); a notebook without one runs with
its defaults. Each key must exist in the notebook's single ``tags=["parameters"]`` cell and match the
type annotation there, or the type of its default when a parameter has no annotation: a misspelled or
unknown parameter is an error naming the file and the key, never silently injected. Parameters are written
``roi_size: int = 64  # help`` so that papermill's ``--help-notebook`` shows the type and the comment
(papermill reads no ``|`` in a type: write ``spacing: "Optional[list[float]]" = [...]``, quoted so that
the kernel needs no import). Executed notebooks and their figures go to ``--output`` (default
``runs/<profile>``, profile = the params folder's name); a failing notebook is left there, partially
executed, and the error names the notebook and the cell. ``$SWINUNETR_DATA_DIR`` and ``$SWINUNETR_RUNS_DIR``
are pointed into the output folder so that runs of different profiles never mix.

While a notebook runs, one line shows its running cell and, for a cell that trains, the step out of the total,
the last loss, seconds per step and the time left (:mod:`swinunetr_lib.notebooks.progress`: rewritten in place on a
terminal, a line every ~30 s in CI logs; ``--no-progress`` turns it off). A profile with measured times
(:mod:`swinunetr_lib.notebooks.estimates`: demo, quick, smoke) first prints the estimated time per notebook on this
machine, and after each notebook its time beside the estimate.
"""
from __future__ import annotations

import argparse
import ast
import base64
import difflib
import io
import itertools
import os
import re
import reprlib
import sys
import time
import tokenize
import typing
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, check_type
from ..paths import DATA_ENV, REPO_ROOT, RUNS_ENV
from ..utils.cli import run_cli
from .estimates import (
    REFERENCE,
    Estimate,
    calibration_workload,
    compare_line,
    estimate,
    format_duration,
    plan_lines,
)
from .progress import ProgressWatcher

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookError(RuntimeError):
    """A notebook or its parameter file is invalid, or the notebook failed to run."""


def list_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The ``NN_topic.py`` sources of ``folder``, in numeric order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py"))


def _read(path: Path):
    import jupytext  # noqa: PLC0415 — Jupyter only: the library engine reads parameters without it

    try:
        return jupytext.read(path)
    except Exception as err:  # report which file is broken
        raise NotebookError(f"{path}: cannot be read as a notebook ({err})") from err


def parameters_cells(nb) -> list[Any]:
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


@dataclass
class NotebookParameter:
    """One line of a parameters cell: ``name: annotation = default  # help``."""

    name: str
    default: Any
    annotation: Any = None   # the type (``int``, ``list[float]``, ``Optional[str]``...); None: not annotated
    type_text: str = ""      # the annotation as written, without quotes; "" when not annotated
    help: str = ""           # the trailing comment


# the names a parameter annotation may use (evaluated with nothing else in scope)
_ANNOTATION_NAMES: dict[str, Any] = {
    "int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple, "dict": dict,
    "Optional": typing.Optional, "Union": typing.Union, "Any": typing.Any, "List": list,
    "Tuple": tuple, "Dict": dict,
}


def _annotation(node: ast.expr, where: str) -> tuple[Any, str]:
    """``(type, text)`` of a parameter annotation: builtins, ``list[float]``, ``Optional[...]``, ``X | None``;
    a quoted annotation (``"Optional[list[float]]"``, never evaluated by the kernel) is read the same way."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value.strip(), mode="eval").body
        except SyntaxError as err:
            raise NotebookError(f"{where}: annotation {node.value!r} is not a type") from err
    text = ast.unparse(node)
    allowed = (ast.Name, ast.Subscript, ast.Tuple, ast.BinOp, ast.BitOr, ast.Load)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id not in _ANNOTATION_NAMES or \
                not (isinstance(sub, allowed) or isinstance(sub, ast.Constant) and sub.value is None):
            raise NotebookError(f"{where}: annotation {text!r} is not understood; use "
                                f"{', '.join(_ANNOTATION_NAMES)} and None, e.g. list[float] or Optional[str]")
    return eval(compile(ast.Expression(node), where, "eval"), {"__builtins__": {}}, dict(_ANNOTATION_NAMES)), text


def _line_comments(source: str) -> dict[int, str]:
    try:
        return {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return {}


def parse_parameter_cell(source: str, where: str) -> dict[str, NotebookParameter]:
    """The parameters of a parameters cell; only ``name = <plain literal>`` and
    ``name: <type> = <plain literal>`` lines are allowed, and an annotated default must match its type."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise NotebookError(f"{where}: parameters cell is not valid Python ({err})") from err
    comments = _line_comments(source)
    params: dict[str, NotebookParameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value, ann = node.targets[0].id, node.value, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value, ann = node.target.id, node.value, node.annotation
        else:
            raise NotebookError(f"{where}: parameters cell line {node.lineno} is not 'name: type = plain value'")
        try:
            default = ast.literal_eval(value)
        except ValueError as err:
            raise NotebookError(f"{where}: parameter {name!r} (line {node.lineno}) is not a plain value") from err
        param = NotebookParameter(name, default, help=comments.get(node.end_lineno or node.lineno, ""))
        if ann is not None:
            param.annotation, param.type_text = _annotation(ann, f"{where}: parameter {name!r}")
            try:
                check_type(name, default, param.annotation)
            except ConfigError as err:
                raise NotebookError(f"{where}: parameter {name!r} default {default!r} does not match its "
                                    f"annotation {param.type_text}") from err
        params[name] = param
    return params


def parse_parameters(source: str, where: str) -> dict[str, Any]:
    """Names and default values of a parameters cell (see :func:`parse_parameter_cell`)."""
    return {k: p.default for k, p in parse_parameter_cell(source, where).items()}


def _percent_parameters_sources(path: Path) -> list[str]:
    """The sources of the cells tagged "parameters" in a jupytext percent-format ``.py`` file, read as text: for
    machines without Jupyter (``label_efficiency --engine library``). Tests check it agrees with jupytext."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise NotebookError(f"{path}: cannot be read as a notebook ({err})") from err
    starts = [i for i, line in enumerate(lines) if line.startswith("# %%")] + [len(lines)]
    return ["\n".join(lines[a + 1:b]).strip("\n") for a, b in itertools.pairwise(starts)
            if re.search(r"""tags=\[[^\]]*["']parameters["']""", lines[a])]


def notebook_parameter_specs(path: Path) -> dict[str, NotebookParameter]:
    """The parameters (default, type, help) of the notebook's single parameters cell (without jupytext installed,
    from the text of a percent-format ``.py`` notebook)."""
    try:
        import jupytext  # noqa: F401, PLC0415 — is it there? GPU machines read the .py text instead
    except ImportError:
        if path.suffix != ".py":
            raise
        sources = _percent_parameters_sources(path)
    else:
        sources = [c.source for c in parameters_cells(_read(path))]
    if len(sources) != 1:
        raise NotebookError(f"{path}: expected exactly one parameters cell, found {len(sources)}")
    return parse_parameter_cell(sources[0], str(path))


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The defaults of the notebook's single parameters cell."""
    return {k: p.default for k, p in notebook_parameter_specs(path).items()}


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return isinstance(default, float) or isinstance(value, int)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return True
    return type(default) is type(value)


SHOWN_VALUE_CHARS = 200  # an error message shows at most this much of a value's repr


def shown(value: Any, limit: int = SHOWN_VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages (a parameter file's value may be huge); a
    container's repr is built piece by piece (``reprlib``) and stops early, so a huge value costs little."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxdict = r.maxtuple = r.maxset = 20
    r.maxlevel = 4
    try:
        text = r.repr(value)
    except Exception:  # a repr that fails: its type is enough
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors and aliases (``&a``, ``*a``): a few hundred bytes of nested aliases
    (a "billion laughs" file) expand to gigabytes once anything walks the values."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _AliasRefused(event.start_mark.line + 1)
        return super().compose_node(parent, index)


class _AliasRefused(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def load_params_file(params_file: Path, notebook: Path) -> dict[str, Any]:
    """Read ``params_file`` (YAML mapping) and check every key and type against ``notebook``'s parameters:
    an annotated parameter's value must match its annotation (an int is widened to a float where a float is
    declared); an unannotated one must keep the kind of its default. YAML anchors and aliases are refused (a
    parameter file never needs them, and nested aliases expand exponentially); values in messages are cut to
    :data:`SHOWN_VALUE_CHARS` characters."""
    try:
        values = yaml.load(params_file.read_text(), Loader=_NoAliasLoader) or {}  # a SafeLoader
    except _AliasRefused as err:
        raise NotebookError(f"{params_file}: line {err.line}: YAML anchors and aliases (&name, *name) are not "
                            "allowed in a parameter file; write each value out") from None
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())
        raise NotebookError(f"{params_file}: not valid YAML ({detail[:SHOWN_VALUE_CHARS]})") from err
    except OSError as err:
        raise NotebookError(f"{params_file}: cannot read parameters ({err.strerror or err})") from err
    if not isinstance(values, dict):
        raise NotebookError(f"{params_file}: expected a mapping of parameter names to values")
    return check_params(values, notebook, str(params_file))


def check_params(values: dict[str, Any], notebook: Path, where: str) -> dict[str, Any]:
    """Check every key and type of ``values`` against ``notebook``'s parameters (see :func:`load_params_file`);
    returns them (ints widened to floats where a float is declared). All problems in one error line that starts
    with ``where`` (the file they came from)."""
    values = dict(values)
    specs = notebook_parameter_specs(notebook)
    defaults = {k: p.default for k, p in specs.items()}
    problems = []
    for key, value in values.items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key)[:SHOWN_VALUE_CHARS], list(defaults), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown parameter {shown(key)}{hint}")
        elif specs[key].annotation is not None:
            try:
                values[key] = check_type(key, value, specs[key].annotation)
            except ConfigError:
                problems.append(f"parameter {key!r} = {shown(value)} is a {type(value).__name__}, "
                                f"the notebook declares {key}: {specs[key].type_text} = {defaults[key]!r}")
        elif not _same_kind(defaults[key], value):
            problems.append(
                f"parameter {key!r} = {shown(value)} is a {type(value).__name__}, "
                f"the notebook's default {defaults[key]!r} is a {type(defaults[key]).__name__}"
            )
    if problems:
        raise NotebookError(f"{where}: " + "; ".join(problems) + f". {notebook.name} accepts: {sorted(defaults)}")
    return values


def check_pair(py: Path) -> Path:
    """Return the ``.ipynb`` paired with ``py``; raise if it is missing or its cells differ from the source."""
    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        raise NotebookError(f"{py}: no paired {ipynb.name}; run `jupytext --sync {py}`")
    a, b = _read(py), _read(ipynb)
    if [(c.cell_type, c.source) for c in a.cells] != [(c.cell_type, c.source) for c in b.cells]:
        raise NotebookError(f"{py} and {ipynb.name} differ; run `jupytext --sync {py}`")
    return ipynb


@dataclass
class NotebookRun:
    notebook: str
    ok: bool
    seconds: float
    output: Path
    error: str = ""
    estimated: float | None = None   # seconds estimated beforehand (a profile with measured times)
    cell: int | None = None          # the failing cell's index, when a cell raised


def export_figures(executed: Path, folder: Path) -> list[Path]:
    """Write every PNG output of an executed notebook to ``folder/cellNN_K.png``."""
    import nbformat  # noqa: PLC0415 — Jupyter only; the module runs on GPU machines without it

    nb = nbformat.read(executed, as_version=4)
    written = []
    for i, cell in enumerate(nb.cells):
        for k, out in enumerate(cell.get("outputs", [])):
            png = out.get("data", {}).get("image/png")
            if png:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"cell{i:02d}_{k}.png"
                path.write_bytes(base64.b64decode(png))
                written.append(path)
    return written


def tagged_view(ipynb: Path, tag: str, out: Path) -> Path:
    """Write to ``out`` the notebook ``ipynb`` cut down to its setup (every cell up to and including the parameters
    cell: title, imports, parameters) and the cells tagged ``tag``, in their order; returns ``out``.

    ``tag="precomputed"`` keeps what shows the instructor's precomputed runs and the cheap cells they read (data,
    views), without the notebook's own training: the view a test executes to check those sections."""
    import nbformat  # noqa: PLC0415 — Jupyter only; the module runs on GPU machines without it

    nb = nbformat.read(ipynb, as_version=4)
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    if sum("parameters" in t for t in tags) != 1:
        raise NotebookError(f"{ipynb}: expected exactly one cell tagged 'parameters'")
    setup = next(i for i, t in enumerate(tags) if "parameters" in t) + 1
    cells = nb.cells[:setup] + [c for c, t in zip(nb.cells[setup:], tags[setup:], strict=True) if tag in t]
    if len(cells) == setup:
        raise NotebookError(f"{ipynb}: no cell tagged {tag!r}")
    nb.cells = cells
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def run_notebook(py: Path, params: dict[str, Any], output_dir: Path, *, progress: bool = True,
                 watcher: ProgressWatcher | None = None, label: str = "", tag: str = "") -> NotebookRun:
    """Execute one notebook with papermill; the executed copy is ``output_dir/<name>.ipynb``. With ``watcher``, its
    line shows ``label``, the running cell and the training in progress (papermill's own cell bar is then off);
    otherwise ``progress`` shows papermill's bar. The kernel's TCP-without-encryption warning is left out of stderr
    (:mod:`swinunetr_lib.notebooks.kernel`). With ``tag``, only its :func:`tagged_view` runs (the executed copy is
    ``output_dir/<name>_<tag>.ipynb``)."""
    import papermill  # noqa: PLC0415 — Jupyter only; the module runs on GPU machines without it
    from papermill.exceptions import PapermillExecutionError  # noqa: PLC0415 — likewise

    from .kernel import QuietKernelManager  # noqa: PLC0415 — imports jupyter_client: Jupyter only, likewise

    ipynb = check_pair(py)
    output = output_dir / ipynb.name
    output_dir.mkdir(parents=True, exist_ok=True)
    if tag:
        output = output_dir / f"{ipynb.stem}_{tag}.ipynb"
        ipynb = tagged_view(ipynb, tag, output_dir / f".{ipynb.stem}_{tag}.view.ipynb")
    if watcher is not None:
        watcher.set_label(label or py.stem, notebook=output)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(ipynb), str(output), parameters=params, kernel_name="python3", cwd=str(py.parent),
            progress_bar=progress and watcher is None, request_save_on_cell_execute=True,
            kernel_manager_class=QuietKernelManager,
        )
    except PapermillExecutionError as err:
        msg = (f"{py.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
               f"{err.ename}: {err.evalue}. Partially executed notebook: {output}")
        return NotebookRun(py.name, False, time.perf_counter() - start, output, msg, cell=err.cell_index)
    except Exception as err:  # kernel died, timeout, ...: report, keep going
        msg = f"{py.name} failed: {type(err).__name__}: {err}. Partially executed notebook: {output}"
        return NotebookRun(py.name, False, time.perf_counter() - start, output, msg)
    export_figures(output, output_dir / "figures" / py.stem)
    return NotebookRun(py.name, True, time.perf_counter() - start, output)


def run_all(
    notebooks: list[Path], params_dir: Path | None, output_dir: Path, *, progress: bool = True,
    keep_going: bool = False, estimates: bool = True,
) -> list[NotebookRun]:
    """Validate every parameter file first, then run the notebooks in order; stop at the first failure.

    ``progress``: the progress line of :class:`~swinunetr_lib.notebooks.progress.ProgressWatcher` while each runs.
    ``estimates``: for a profile with measured times (the params folder's name in
    :data:`~swinunetr_lib.notebooks.estimates.REFERENCE`), print the estimate first (a ~1 s calibration), then
    each notebook's time beside it; a profile's notice (the quick tier's) is printed first (``main`` repeats it
    after the summary)."""
    planned = []
    for py in notebooks:
        pfile = params_dir / f"{py.stem}.yml" if params_dir else None
        params = load_params_file(pfile, py) if pfile and pfile.exists() else {}
        planned.append((py, params))
    if params_dir:
        known = {py.stem for py in list_notebooks(notebooks[0].parent)} if notebooks else set()
        stray = [p.name for p in sorted(params_dir.glob("*.yml")) if p.stem not in known]
        if stray:
            raise NotebookError(f"{params_dir}: parameter files for no notebook: {stray}")
    profile = params_dir.name if params_dir else ""
    notice = REFERENCE.get(profile, {}).get("notice", "")
    if notice:
        print(f"NOTE: {notice}", flush=True)
    est = plan_estimate(profile, [py.stem for py, _ in planned]) if estimates else None
    os.environ[DATA_ENV] = str(output_dir / "data")
    os.environ[RUNS_ENV] = str(output_dir / "artifacts")
    runs = []
    watching = ProgressWatcher([output_dir / "artifacts"]) if progress else None
    with watching or nullcontext():
        say = watching.say if watching is not None else (lambda text: print(text, flush=True))
        for i, (py, params) in enumerate(planned, 1):
            say(f"[{i}/{len(planned)}] {py.name} {params if params else '(defaults)'}")
            run = run_notebook(py, params, output_dir, progress=progress, watcher=watching,
                               label=f"[{i}/{len(planned)}] {py.stem}")
            run.estimated = est.get(py.stem) if est is not None else None
            say(f"    {'ok' if run.ok else 'FAILED'} in {run.seconds:.1f} s -> {run.output}")
            if est is not None:
                say("    " + compare_line(py.stem, run.seconds, run.estimated))
            runs.append(run)
            if not run.ok and not keep_going:
                break
    return runs


def plan_estimate(profile: str, stems: list[str]) -> Estimate | None:
    """Print the estimate of ``profile`` for the notebooks ``stems`` (after a short calibration) and return it;
    None, printing nothing, when the profile has no measured times or the calibration cannot run."""
    if profile not in REFERENCE:
        return None
    try:
        est = estimate(profile, stems)
    except Exception as err:  # noqa: BLE001 - no estimate is no reason not to run the notebooks
        print(f"(no time estimate: the calibration failed: {type(err).__name__}: {err})", flush=True)
        return None
    if est is not None:
        print("\n".join(plan_lines(est, stems)), flush=True)
    return est


def summary(runs: list[NotebookRun], output_dir: Path) -> str:
    with_est = any(r.estimated is not None for r in runs)
    head = f"{'notebook':<28} {'status':<7} {'seconds':>8}" + (f" {'estimated':>10}" if with_est else "")
    lines = [head, "-" * len(head)]
    for r in runs:
        est = (f" {r.estimated:10.0f}" if r.estimated is not None else f" {'-':>10}") if with_est else ""
        lines.append(f"{r.notebook:<28} {'ok' if r.ok else 'FAILED':<7} {r.seconds:8.1f}{est}")
    if with_est:
        known = [r for r in runs if r.estimated is not None]
        lines.append(f"{'total':<28} {'':<7} {sum(r.seconds for r in runs):8.1f} "
                     f"{sum(r.estimated or 0.0 for r in known):10.0f}  "
                     f"({format_duration(sum(r.seconds for r in runs))}; the estimate is an estimate)")
    lines.append(f"outputs: {output_dir} (executed notebooks; figures/ holds their PNGs)")
    lines += [f"ERROR: {r.error}" for r in runs if not r.ok]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks in order")
    run.add_argument("notebooks", nargs="*", type=Path, help="NN_topic.py files (default: all in notebooks/)")
    run.add_argument("--params", type=Path, default=None, help="folder of NN_topic.yml parameter files")
    run.add_argument("--output", type=Path, default=None, help="default: runs/<params folder name>")
    run.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    run.add_argument("--no-progress", action="store_true", help="no progress line while notebooks run")
    run.add_argument("--no-estimate", action="store_true", help="no time estimate (and no calibration) first")
    show = sub.add_parser("params", help="print a notebook's parameters and defaults")
    show.add_argument("notebook", type=Path)
    sub.add_parser("calibrate", help="time the estimates' calibration workload on this machine (seconds)")
    sub.add_parser("sweep", help="run a notebook over a grid of parameters into one results table "
                                 "(swinunetr_lib.notebooks.sweep; `sweep --help`)")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.command == "sweep":  # `python -m swinunetr_lib.notebooks sweep` goes to sweep.main (__main__.py)
            raise NotebookError("sweep: run python -m swinunetr_lib.notebooks sweep NOTEBOOK --grid GRID --out DIR")
        if args.command == "calibrate":
            print(f"{calibration_workload():.3f} s per pass (median; "
                  "swinunetr_lib/notebooks/estimates.py CALIBRATIONS holds the reference machines')")
            return 0
        if args.command == "params":
            for p in notebook_parameter_specs(args.notebook).values():
                typed = f"{p.name}: {p.type_text}" if p.type_text else p.name
                print(f"{typed} = {p.default!r}" + (f"  # {p.help}" if p.help else ""))
            return 0
        notebooks = [p.resolve() for p in args.notebooks] or list_notebooks()
        if not notebooks:
            raise NotebookError(f"no NN_topic.py notebooks in {NOTEBOOK_DIR}")
        for p in notebooks:
            if not p.is_file():
                raise NotebookError(f"{p}: no such notebook")
            if p.suffix != ".py" or not p.name[:2].isdigit():
                raise NotebookError(f"{p}: not a notebook source; expected notebooks/NN_topic.py")
        if args.params is not None and not args.params.is_dir():
            raise NotebookError(f"{args.params}: --params must be a folder of NN_topic.yml files")
        profile = args.params.name if args.params else "default"
        output = (args.output or REPO_ROOT / "runs" / profile).resolve()
        runs = run_all(notebooks, args.params, output, progress=not args.no_progress, keep_going=args.keep_going,
                       estimates=not args.no_estimate)
        print(summary(runs, output))
        if REFERENCE.get(profile, {}).get("notice"):
            print(f"NOTE: {REFERENCE[profile]['notice']}")
        return 0 if all(r.ok for r in runs) and len(runs) == len(notebooks) else 1

    return run_cli("python -m swinunetr_lib.notebooks", body)


if __name__ == "__main__":
    sys.exit(main())
