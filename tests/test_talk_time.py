"""swinunetr_lib.notebooks.talk_time: the workshop's minutes come from what the notebooks hold; the guide says so."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext

from swinunetr_lib.notebooks.talk_time import (
    BEGIN,
    CELL_MIN,
    SKIP_MARK,
    SLOTS,
    WORDS_PER_MIN,
    planned_slots,
    skipped_cells,
    talk_time,
    talk_times,
)
from swinunetr_lib.paths import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "workshop.md"
TOY = '''# %% [markdown]
# # 99 · Toy
# one two three four five

# %%
x = 1

# %% [markdown]
# ## Optional part
# > **⏭ Skip if behind**: not needed.
#
# six seven

# %%
y = pretrain(x)

# %% [markdown]
# ### still skipped

# %%
z = 2

# %% [markdown]
# ## Back
# eight

# %% [markdown] tags=["exercise"]
# **Exercise 1 (predict, 5 min).** Words here are the exercise's.

# %% tags=["solution", "prediction"]
# stub: prediction = None
prediction = 1

# %% [markdown] tags=["selfcheck"]
# ## Self-check
# **1.** a? <details><summary>Answer</summary>b</details>
# **2.** c? <details><summary>Answer</summary>d</details>
'''


def test_counts_outside_skipped_sections(tmp_path):
    src = tmp_path / "99_toy.py"
    src.write_text(TOY)
    assert skipped_cells(jupytext.read(src).cells) == [False, False, True, True, True, True, False, False, False,
                                                       False]
    t = talk_time(src, compute_s=600)
    assert (t.words, t.code_cells, t.exercises, t.questions) == (9, 1, 1, 2)   # "99 Toy one … five", "Back eight"
    assert t.compute_min == 0   # the only training cell is in a skipped section
    assert t.talk_min == 9 / WORDS_PER_MIN + CELL_MIN and t.slot_min == 10
    assert (t.skipped_words, t.skipped_cells) == (11, 2)   # "Optional part Skip if behind not needed six seven …"
    trains = tmp_path / "98_toy.py"
    trains.write_text(TOY.replace("> **⏭ Skip if behind**: not needed.", "not needed."))
    t = talk_time(trains, compute_s=600)
    assert t.compute_min == 10 and t.wait_min == 10 - t.talk_min and t.slot_min == 20


def test_every_skip_mark_is_the_marker_under_a_heading():
    """One visible marker, always the line right under a section heading, so the estimate and the reader agree."""
    for src in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        for cell in jupytext.read(src).cells:
            for i, line in enumerate(cell.source.splitlines()):
                if "Skip if behind**" in line and line.startswith(">"):
                    assert i == 1 and line.startswith(SKIP_MARK) and cell.source.startswith("#"), (src.name, line)


def test_01_data_engineering_and_04_training_are_skipped():
    by = {t.notebook: t for t in talk_times()}
    assert by["01_data_curation"].skipped_cells >= 6 and by["04_finetune_msd"].compute_min == 0
    assert by["02_ssl_pretraining"].compute_min > 0   # 02 trains in the room


def test_the_guide_holds_the_current_tables_and_a_schedule_that_matches_them():
    proc = subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks.talk_time", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = GUIDE.read_text()
    assert BEGIN in text
    plan = planned_slots(talk_times())
    schedule = text.split("## Schedule (3 hours)", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| (\d):(\d\d)–(\d):(\d\d) \| ([^|]*) \|", schedule, flags=re.M)
    assert rows, "no schedule rows"
    minutes = {}
    for h0, m0, h1, m1, what in rows:
        stems = tuple(s for slot in SLOTS for s in slot
                      if re.search(rf"\b{s[:2]} ", what) and what.strip()[:2].isdigit())
        minutes[stems or what.strip()[:12]] = 60 * (int(h1) - int(h0)) + int(m1) - int(m0)
    for slot, want in plan.items():
        assert minutes.get(slot) == want, f"{slot}: {minutes.get(slot)} min in the schedule, {want} estimated"
    last = rows[-1]
    assert (last[2], last[3]) == ("3", "00"), "the schedule ends at 3:00"
    assert sum(minutes.values()) == 180


def test_the_glossary_defines_the_terms_the_issue_names():
    glossary = (REPO_ROOT / "docs" / "glossary.md").read_text()
    for anchor in ("hu", "ras", "affine", "windowing", "nt-xent", "dice", "hd95", "dicece", "sliding-window",
                   "label-balanced-crops", "linear-probe", "dense-probe", "atlas-baseline", "confidence-interval",
                   "smallest-detectable-effect"):
        assert f'<a id="{anchor}"></a>' in glossary, anchor


def test_every_relative_link_of_the_notebooks_and_exercises_resolves():
    """Links to docs/ (the glossary with its anchors) work from notebooks/ and from notebooks/exercises/, in
    JupyterLab and on a code host: relative paths, anchors that are ids in the target."""
    link = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#|/)([^)\s#]+)(?:#([^)\s]+))?\)")
    sources = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    sources += sorted((REPO_ROOT / "notebooks" / "exercises").glob("*_ex.py"))
    checked = 0
    for src in sources:
        for cell in jupytext.read(src).cells:
            if cell.cell_type != "markdown":
                continue
            for path, anchor in link.findall(cell.source):
                target = (src.parent / path).resolve()
                assert target.is_file(), f"{src.relative_to(REPO_ROOT)}: {path} does not exist"
                if anchor:
                    assert f'id="{anchor}"' in target.read_text(), f"{src.name}: no anchor #{anchor} in {path}"
                checked += 1
    assert checked >= 40
    for path, _ in link.findall((REPO_ROOT / "docs" / "workshop.md").read_text()):
        assert (GUIDE.parent / path).exists(), path


def test_the_command_prints_the_tables():
    proc = subprocess.run([sys.executable, "-m", "swinunetr_lib.notebooks.talk_time"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "| 02_ssl_pretraining |" in proc.stdout and "| total |" in proc.stdout
    assert Path(REPO_ROOT / "notebooks").is_dir()
