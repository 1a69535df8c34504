"""The workshop commands: `make check`'s checks (OK, or FAIL with a fix) on good and broken setups, and
`make lab` reaching a JupyterLab that lists notebooks/ in a real (headless) browser."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swinunetr_lib.data.cohort import build_demo_cohort
from swinunetr_lib.notebooks import workshop

REPO = Path(__file__).resolve().parent.parent
MIRROR = (os.environ.get("SWINUNETR_EXAMPLES_MIRROR")
          or str(REPO.parent / "shared" / "data" / "totalsegmentator_examples"))


@pytest.fixture
def mirror_copy(tmp_path, monkeypatch):
    """A copy of the example mirror (as if from a USB stick), with an empty cache."""
    if not Path(MIRROR).is_dir():
        pytest.skip(f"no example mirror at {MIRROR}")
    copy = tmp_path / "usb" / "totalsegmentator_examples"
    shutil.copytree(MIRROR, copy)
    monkeypatch.setenv("SWINUNETR_EXAMPLES_MIRROR", str(copy))
    monkeypatch.setenv("SWINUNETR_CACHE_DIR", str(tmp_path / "cache"))
    return copy


def test_check_examples_verifies_every_file(mirror_copy):
    good = workshop.check_examples()
    assert good.ok and good.detail.startswith("28 files, SHA-256 verified") and str(mirror_copy) in good.detail
    ct = mirror_copy / "example_ct_sm.nii.gz"
    ct.write_bytes(ct.read_bytes()[:-10] + b"0123456789")
    bad = workshop.check_examples()
    assert not bad.ok and "wrong SHA-256" in bad.detail and str(ct) in bad.detail
    assert "SWINUNETR_EXAMPLES_MIRROR" in bad.fix
    ct.unlink()
    gone = workshop.check_examples()
    assert not gone.ok and "1 of 28 files missing, e.g. example_ct_sm.nii.gz" in gone.detail


def test_check_cohort_before_and_after_building(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINUNETR_DATA_DIR", str(tmp_path / "data"))
    missing = workshop.check_cohort()
    assert not missing.ok and "not built" in missing.detail and "make lab" in missing.fix
    build_demo_cohort(n_phantoms=3, n_validation=1, n_unlabeled=0, n_msd=2, spacing=(12.0, 12.0, 12.0),
                      include_real=False)
    built = workshop.check_cohort()
    assert built.ok and "2 labeled training cases" in built.detail
    victim = next((tmp_path / "data" / "demo_cohort" / "imagesTr").glob("*.nii.gz"))
    victim.unlink()
    broken = workshop.check_cohort()
    assert not broken.ok and "1 file(s) missing" in broken.detail


def test_check_model_runs_forward_and_backward():
    result = workshop.check_model(roi_size=(64, 32, 32), feature_size=12)
    assert result.ok, result.line()
    assert re.search(r"64x32x32 forward\+backward in [0-9.]+ s on (cpu|cuda)", result.detail)


def test_a_failing_check_prints_fail_and_its_fix(capsys):
    def check_broken():
        raise RuntimeError("no such thing")

    results = workshop.run_checks([workshop.check_python, check_broken, workshop.check_disk])
    assert [r.ok for r in results] == [True, False, True]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OK    python") and lines[1].startswith("FAIL  broken")
    assert "RuntimeError: no such thing" in lines[1] and lines[2].strip().startswith("-> fix:")


@pytest.mark.slow
def test_make_check_exit_status_and_lines(tmp_path):
    """`make check` on this checkout with an empty data folder: only the demo cohort fails, with its fix."""
    env = dict(os.environ, SWINUNETR_DATA_DIR=str(tmp_path / "data"), SWINUNETR_RUNS_DIR=str(tmp_path / "runs"))
    t0 = time.monotonic()
    proc = subprocess.run(["make", "-s", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("OK", "FAIL"))]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert [ln.split()[1] for ln in lines if ln.startswith("FAIL")] == ["demo"], proc.stdout
    assert len(lines) == len(workshop.CHECKS)
    assert "-> fix: make lab builds it" in proc.stdout
    assert "9 of 10 checks OK" in proc.stdout
    print(f"make check: {seconds:.0f} s")


def _browser_check():
    spec = importlib.util.spec_from_file_location("browser_check", REPO / "ci" / "browser_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("browser_check", module)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules["browser_check"])
    return sys.modules["browser_check"]


JS_LISTING = """() => Array.from(document.querySelectorAll('.jp-DirListing-item .jp-DirListing-itemText'))
    .map(e => e.textContent.trim())"""


@pytest.mark.browser
@pytest.mark.slow
def test_make_lab_opens_jupyterlab_on_the_notebooks(tmp_path):
    bc = _browser_check()
    if not Path(bc.CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{bc.CHROMIUM} missing in CI: {bc.INSTALL_HINT}")
        pytest.skip(f"{bc.CHROMIUM} not installed ({bc.INSTALL_HINT})")
    port = bc.free_port()
    env = dict(os.environ, SWINUNETR_DATA_DIR=str(tmp_path / "data"), SWINUNETR_RUNS_DIR=str(tmp_path / "runs"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter_runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter_config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab_settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab_workspaces"))
    log = tmp_path / "make_lab.log"
    cmd = ["make", "lab", "LAB_OPEN=0", f"LAB_PORT={port}", "LAB_ARGS=--ip=127.0.0.1 --ServerApp.port_retries=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        token, t0 = None, time.monotonic()
        while token is None and time.monotonic() - t0 < 600:  # setup (examples, demo cohort), then the server
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            token = found.group(1) if found else None
            time.sleep(1.0)
        assert token, f"no JupyterLab address in the log after 600 s:\n{log.read_text()[-3000:]}"
        base = f"http://127.0.0.1:{port}"
        bc.wait_http(f"{base}/api/status?token={token}", proc, 120, log)
        text = log.read_text()
        assert re.search(r"example data: 28 files verified by SHA-256", text), text[-3000:]
        assert f"demo cohort: {tmp_path / 'data' / 'demo_cohort'}" in text
        from playwright.sync_api import sync_playwright

        expected = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bc.CHROMIUM, args=bc.CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}/lab?token={token}", wait_until="domcontentloaded", timeout=120_000)
                names = bc.wait_for(page, JS_LISTING, lambda items: set(expected) <= set(items or []),
                                    180, "JupyterLab file browser")
                page.screenshot(path=str(tmp_path / "lab.png"))
            finally:
                browser.close()
        listed = set(names)
        assert set(expected) <= listed and {p.with_suffix(".py").name for p in map(Path, expected)} <= listed
        assert "swinunetr_lib" not in listed  # the file browser opens on notebooks/, not the repository
        assert (tmp_path / "lab.png").stat().st_size > 10_000
    finally:
        bc.stop_lab(proc)
    assert proc.poll() is not None
