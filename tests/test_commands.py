"""Every ``python -m swinunetr_lib…`` written in the README, Makefile, ci/, docs/ and the notebooks resolves, and its
``--help`` (and that of the subcommand written after it) exits 0 (issue #24 item 3)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# "-m swinunetr_lib.x.y" (python, python3, $(PY), torchrun), then a subcommand word when one follows
COMMAND = re.compile(r"-m (swinunetr_lib(?:\.[A-Za-z_][A-Za-z_0-9]*)*)(?![.<{\w])"  # the module
                     r"(?:[ \t]+([a-z][a-z0-9-]*)\b(?![./=]))?")  # a subcommand
# words that follow a module in prose or commands without being a subcommand
NOT_SUBCOMMANDS = {"with", "and", "or", "as", "is", "runs", "for", "to", "on", "in", "the", "a"}


def documented_files(repo: Path = REPO) -> list[Path]:
    files = [repo / "README.md", repo / "Makefile"]
    files += sorted(p for p in (repo / "ci").rglob("*") if p.is_file() and p.suffix in {".sh", ".py", ".yml", ""})
    files += sorted((repo / "docs").rglob("*.md"))
    files += sorted((repo / "notebooks").glob("*.py")) + sorted((repo / "notebooks" / "exercises").glob("*.py"))
    return [p for p in files if p.is_file()]


def documented_commands(files: list[Path]) -> dict[tuple[str, ...], str]:
    """``{(module,) or (module, subcommand): "file:line" of its first mention}``."""
    found: dict[tuple[str, ...], str] = {}
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in COMMAND.finditer(line):
                module, sub = m.group(1), m.group(2)
                where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{n}"
                found.setdefault((module,), where)
                if sub and sub not in NOT_SUBCOMMANDS:
                    found.setdefault((module, sub), where)
    return found


# One interpreter runs every command's --help as `python -m` does (runpy, run_name="__main__"), so the suite
# pays for one import of torch and MONAI, not one per command.
_RUNNER = r"""
import contextlib, io, json, runpy, sys
results = {}
for cmd in json.loads(sys.argv[1]):
    sys.argv = [cmd[0], *cmd[1:], "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(cmd[0], run_name="__main__", alter_sys=True)
        code = "returned without exiting"
    except SystemExit as e:
        code = e.code or 0
    except BaseException as e:
        code = f"{type(e).__name__}: {e}"
    results[" ".join(cmd)] = [code, out.getvalue()[-300:]]
print(json.dumps(results))
"""


def test_the_pattern_reads_commands_and_subcommands(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("run `python -m swinunetr_lib.data prepare ct.json` then\n"
                   "$(PY) -m swinunetr_lib.notebooks run --params x and torchrun -m swinunetr_lib.pretrain --a 1\n"
                   "`python -m swinunetr_lib.infer.export` with a file; python -m swinunetr_lib.bench ./x\n")
    found = documented_commands([doc])
    assert sorted(found) == [("swinunetr_lib.bench",), ("swinunetr_lib.data",), ("swinunetr_lib.data", "prepare"),
                             ("swinunetr_lib.infer.export",), ("swinunetr_lib.notebooks",),
                             ("swinunetr_lib.notebooks", "run"), ("swinunetr_lib.pretrain",)]


def test_every_documented_command_resolves_and_its_help_exits_0():
    commands = documented_commands(documented_files())
    modules = {c[0] for c in commands}
    assert {"swinunetr_lib.pretrain", "swinunetr_lib.finetune", "swinunetr_lib.infer", "swinunetr_lib.data",
            "swinunetr_lib.notebooks", "swinunetr_lib.bench"} <= modules, sorted(modules)
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(sorted(commands))], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [f"{commands[tuple(cmd.split())]}: python -m {cmd} --help -> {code}: {out.strip()[-200:]}"
           for cmd, (code, out) in results.items() if code != 0]
    assert not bad, "documented commands that do not resolve or whose --help fails:\n" + "\n".join(bad)
