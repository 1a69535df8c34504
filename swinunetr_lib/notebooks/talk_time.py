"""Talk time of each notebook in a workshop: minutes estimated from what the notebook holds, not from its compute alone.

A slot is the time to say the notebook's text, run and show its cells, wait for training that outlasts the talk,
do its exercises and its self-check questions. Per notebook (``notebooks/NN_topic.py``)::

    talk      = markdown words / WORDS_PER_MIN  +  code cells x CELL_MIN
    wait      = max(0, quick-tier compute - talk)      (start the long cells first, talk while they run)
    exercises = exercises x EXERCISE_MIN,  self-check = questions x QUESTION_MIN
    slot      = talk + wait + exercises + self-check, rounded up to 5 min

Counted only outside the sections marked :data:`SKIP_MARK` (a heading cell whose next line is
``> **⏭ Skip if behind**``; the section runs to the next heading of the same or a higher level), and the text of
exercise, solution and self-check cells is left out of the words (their time is the exercise's); prose that a code
cell renders from the results files (``Markdown(f"...")``) is counted as words. The compute is
the notebook's measured time at its defaults (``estimates.REFERENCE["quick"]``), counted only when a cell that
trains (:data:`TRAINING_CALLS`) lies outside the skipped sections. ``skipped`` is what the marked sections would
add: the time saved by skipping them. ``python -m swinunetr_lib.notebooks.talk_time`` prints the table that
``docs/workshop.md`` reports (a test keeps the two equal).
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext

from ..paths import REPO_ROOT
from .estimates import REFERENCE
from .exercises import EXERCISE_TAG, SOLUTION_TAG, exercise_notebook, has_exercises

SKIP_MARK = "> **⏭ Skip if behind**"
SELFCHECK_TAG = "selfcheck"
WORDS_PER_MIN = 130      # speaking pace of a lecture; the attendees read along
CELL_MIN = 0.5           # run a cell and point at its output
EXERCISE_MIN = 5         # every exercise is sized for 5 minutes (predict, run, compare)
QUESTION_MIN = 1         # a self-check question, asked and answered in the room
TRAINING_CALLS = ("pretrain(", "finetune(", "run_sweep(", "run_probes(")
_HEADING = re.compile(r"^(#{1,6})\s")
_STRING = re.compile(r'f?"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class TalkTime:
    """The estimate of one notebook: its counts (outside skipped sections) and minutes."""

    notebook: str
    words: int
    code_cells: int
    exercises: int
    questions: int
    compute_min: float
    talk_min: float
    wait_min: float
    slot_min: int
    skipped_words: int
    skipped_cells: int
    skipped_min: float

    def row(self) -> str:
        """One row of the schedule's estimate table in ``docs/workshop.md``."""
        return (f"| {self.notebook} | {self.words:,} | {self.code_cells} | {self.exercises} | {self.questions} | "
                f"{self.compute_min:.1f} | {self.talk_min:.0f} | {self.wait_min:.0f} | **{self.slot_min}** | "
                f"{self.skipped_min:.0f} |")


HEADER = ("| notebook | words | code cells | exercises | self-check | compute (min) | talk (min) | wait (min) | "
          "slot (min) | skip saves (min) |\n|---|---|---|---|---|---|---|---|---|---|")


def _words(text: str) -> int:
    text = re.sub(r"\{[^{}]*\}", " ", text)  # an f-string's fields are numbers, said as one word or none
    text = re.sub(r"<[^>]+>|\]\([^)]*\)|[`*#>|]", " ", text)
    return len(re.findall(r"[^\W\d_][\w'’-]*|\d[\d.,]*", text))


def skipped_cells(cells: list) -> list[bool]:
    """Per cell, whether it lies in a section marked :data:`SKIP_MARK`."""
    out, level = [], 0   # level: the heading level of the skipped section, 0 outside one
    for cell in cells:
        if cell.cell_type == "markdown":
            m = _HEADING.match(cell.source)
            if m:
                lines = cell.source.splitlines()
                marked = len(lines) > 1 and lines[1].startswith(SKIP_MARK)
                if level and len(m.group(1)) <= level:
                    level = 0
                if marked and not level:
                    level = len(m.group(1))
        out.append(bool(level))
    return out


def talk_time(source: Path, compute_s: float | None = None) -> TalkTime:
    """The estimate for one notebook source; ``compute_s``: its compute at the defaults (default: the quick tier)."""
    cells = jupytext.read(source).cells
    skipped = skipped_cells(cells)
    counts = {False: [0, 0], True: [0, 0]}  # skipped -> [words, code cells]
    trains = False
    questions = 0
    for cell, skip in zip(cells, skipped, strict=True):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if SELFCHECK_TAG in tags:
            questions += cell.source.count("<details>")
            continue
        if {EXERCISE_TAG, SOLUTION_TAG} & tags:
            continue
        if cell.cell_type == "markdown":
            counts[skip][0] += _words(cell.source)
        elif cell.cell_type == "code" and "parameters" not in tags and cell.source.strip():
            counts[skip][1] += 1
            if "Markdown(" in cell.source:  # prose rendered from the results files: said like the rest
                counts[skip][0] += sum(_words(t) for t in _STRING.findall(cell.source.split("Markdown(", 1)[1]))
            trains |= not skip and any(call in cell.source for call in TRAINING_CALLS)
    exercises = exercise_notebook(source)[1] if has_exercises(source) else 0
    if compute_s is None:
        compute_s = REFERENCE["quick"]["seconds"].get(source.stem, 0.0)
    compute_min = compute_s / 60 if trains else 0.0
    (words, code), (s_words, s_code) = counts[False], counts[True]
    talk = words / WORDS_PER_MIN + code * CELL_MIN
    wait = max(0.0, compute_min - talk)
    total = talk + wait + exercises * EXERCISE_MIN + questions * QUESTION_MIN
    return TalkTime(source.stem, words, code, exercises, questions, compute_min, talk, wait,
                    5 * math.ceil(total / 5 - 1e-9), s_words, s_code, s_words / WORDS_PER_MIN + s_code * CELL_MIN)


# The 3-hour plan of docs/workshop.md: the slots (notebooks taught together) and the exercises done in the room
# (the others, and the self-check questions, are homework or for a slot that runs early).
SLOTS: tuple[tuple[str, ...], ...] = (("00_quickstart", "01_data_curation"), ("02_ssl_pretraining",),
                                      ("03_finetune_btcv",), ("04_finetune_msd",), ("05_visualize_3d",),
                                      ("06_label_efficiency",))
IN_ROOM: dict[str, tuple[int, ...]] = {"00_quickstart": (1,), "01_data_curation": (1,), "02_ssl_pretraining": (2,),
                                      "03_finetune_btcv": (1, 3), "04_finetune_msd": (1,), "05_visualize_3d": (2,),
                                      "06_label_efficiency": (1, 2)}
FIXED_MIN = {"welcome and make check": 10, "break": 10}


def planned_slots(times: list[TalkTime]) -> dict[tuple[str, ...], int]:
    """Minutes of each slot of :data:`SLOTS`: talk + wait + the in-room exercises, rounded up to 5 min."""
    by_name = {t.notebook: t for t in times}
    out = {}
    for slot in SLOTS:
        total = sum(by_name[n].talk_min + by_name[n].wait_min + EXERCISE_MIN * len(IN_ROOM.get(n, ()))
                    for n in slot)
        out[slot] = 5 * math.ceil(total / 5 - 1e-9)
    return out


def talk_times(folder: Path = REPO_ROOT / "notebooks") -> list[TalkTime]:
    """The estimate of every ``NN_topic.py`` in ``folder``, in order."""
    return [talk_time(p) for p in sorted(folder.glob("[0-9][0-9]_*.py"))]


def table(times: list[TalkTime]) -> str:
    """The Markdown tables ``docs/workshop.md`` holds: the estimate per notebook with a total row, then the
    3-hour plan (:data:`SLOTS`, :data:`IN_ROOM`)."""
    total = sum(t.slot_min for t in times)
    plan = planned_slots(times)
    lines = [HEADER, *(t.row() for t in times),
             f"| total | | | {sum(t.exercises for t in times)} | {sum(t.questions for t in times)} | | | | "
             f"**{total}** | {sum(t.skipped_min for t in times):.0f} |", "",
             "| slot | exercises in the room | minutes |", "|---|---|---|"]
    lines += [f"| {name} | | {m} |" for name, m in FIXED_MIN.items()]
    for slot, minutes in plan.items():
        ex = "; ".join(f"{n[:2]}: " + (", ".join(map(str, IN_ROOM.get(n, ()))) or "none") for n in slot)
        lines.append(f"| {' + '.join(slot)} | {ex} | {minutes} |")
    lines.append(f"| total | | **{sum(plan.values()) + sum(FIXED_MIN.values())}** |")
    return "\n".join(lines)


BEGIN = "<!-- talk-time table: generated by `python -m swinunetr_lib.notebooks.talk_time --write`; do not edit -->"
END = "<!-- end of the talk-time table -->"


def rendered(guide_text: str, folder: Path) -> str:
    """``guide_text`` with the block between :data:`BEGIN` and :data:`END` replaced by :func:`table`."""
    if BEGIN not in guide_text or END not in guide_text:
        raise ValueError(f"the guide has no talk-time block ({BEGIN} ... {END})")
    head, rest = guide_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table(talk_times(folder))}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Print the tables; ``--write`` puts them into docs/workshop.md, ``--check`` exits 1 when that is stale."""
    import argparse  # noqa: PLC0415 - only for the command line

    from ..utils.files import atomic_write_text  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.notebooks.talk_time",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write the tables into the guide (make notebooks does)")
    parser.add_argument("--check", action="store_true", help="exit 1 when the guide's tables are stale")
    parser.add_argument("--guide", type=Path, default=REPO_ROOT / "docs" / "workshop.md")
    parser.add_argument("--notebooks", type=Path, default=REPO_ROOT / "notebooks")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(table(talk_times(args.notebooks)))
        return 0
    text = args.guide.read_text()
    new = rendered(text, args.notebooks)
    if args.check:
        if new != text:
            print(f"{args.guide}: the talk-time table is stale; run python -m swinunetr_lib.notebooks.talk_time "
                  "--write", file=sys.stderr)
            return 1
        print(f"{args.guide}: the talk-time table is current")
        return 0
    atomic_write_text(new, args.guide)
    print(f"wrote the talk-time table into {args.guide}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
