"""The real-browser check (ci/browser_check.py): JupyterLab in headless Debian Chromium via Playwright.

Runs the cheap notebooks (00, 01, 05) with their smoke parameters in the browser and opens the others
(their papermill-executed copies when ``runs/smoke`` has them). Notebook 05's NiiVue viewer (ipyniivue,
WebGL through SwiftShader) must draw the CT with its labels: a blank canvas fails. Skipped only when
``/usr/bin/chromium`` is missing outside CI (install: ``apt-get update && apt-get install -y chromium``); in
CI (``$CI`` set) a missing browser is a failure. The blank-canvas rule itself is tested without a browser.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = REPO / "ci" / "browser_check.py"


def _browser_check():
    """ci/browser_check.py as a module (it is a script, not part of the package)."""
    if "browser_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("browser_check", CHECK)
        module = importlib.util.module_from_spec(spec)
        sys.modules["browser_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["browser_check"]


def test_blank_canvas_rule_on_made_up_screenshots(tmp_path):
    """A black or one-colour canvas is blank; a grey CT is not blank but lacks labels; a CT with organ colours
    (and a red crosshair, which does not count as a label) passes."""
    from matplotlib.image import imsave

    from swinunetr_lib.viz.figures import label_color

    bc = _browser_check()
    rng = np.random.default_rng(0)
    ct = np.zeros((200, 300, 3))
    yy, xx = np.mgrid[:200, :300]
    body = (yy - 100) ** 2 / 80 ** 2 + (xx - 150) ** 2 / 120 ** 2 < 1
    ct[body] = rng.uniform(0.2, 0.8, (int(body.sum()), 1))  # grey tissue
    crosshair = ct.copy()
    crosshair[100, :] = crosshair[:, 150] = (1.0, 0.0, 0.0)
    labelled = crosshair.copy()
    organ = body & ((yy - 90) ** 2 + (xx - 110) ** 2 < 30 ** 2)
    labelled[organ] = 0.5 * labelled[organ] + 0.5 * np.asarray(label_color(6))  # liver at opacity 0.5
    cases = {"black": np.zeros((200, 300, 3)), "flat": np.full((200, 300, 3), 0.3), "ct": crosshair,
             "labelled": labelled}
    problems = {}
    for name, rgb in cases.items():
        imsave(tmp_path / f"{name}.png", rgb)
        problems[name] = bc.canvas_problem(bc.canvas_stats(tmp_path / f"{name}.png"))
    assert problems["black"].startswith("blank canvas") and problems["flat"].startswith("blank canvas")
    assert "no coloured labels" in problems["ct"]
    assert problems["labelled"] is None
    assert bc.canvas_problem(bc.canvas_stats(tmp_path / "ct.png"), labels=False) is None


def test_book_link_rule_on_a_made_up_site(tmp_path):
    """ci/book_check.py's link check, without a browser: a missing page and a missing anchor are problems; a page
    that exists and an anchor that is an id on it are not."""
    spec = importlib.util.spec_from_file_location("book_check", REPO / "ci" / "book_check.py")
    bk = sys.modules["book_check"] = importlib.util.module_from_spec(spec)  # its dataclasses look themselves up
    spec.loader.exec_module(bk)
    (tmp_path / "b.html").write_text('<h1 id="here">B</h1>')
    server, base = bk.serve(tmp_path)
    try:
        links = {f"{base}/b.html": "a.html", f"{base}/b.html#here": "a.html", f"{base}/c.html": "a.html",
                 f"{base}/b.html#nope": "a.html"}
        problems = bk.check_links(tmp_path, base, links)
    finally:
        server.shutdown()
        server.server_close()
    assert len(problems) == 2, problems
    assert any("a.html: link to /c.html does not resolve" in p for p in problems)
    assert any("a.html: link to /b.html#nope: no such anchor" in p for p in problems)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.xdist_group("runs_browser")  # all write runs/browser: one process
def test_notebooks_render_in_jupyterlab(tmp_path):
    if not Path("/usr/bin/chromium").is_file():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium missing in CI: apt-get update && apt-get install -y chromium")
        pytest.skip("/usr/bin/chromium not installed (apt-get update && apt-get install -y chromium)")
    out = REPO / "runs" / "browser"
    env = dict(os.environ, SWINUNETR_DATA_DIR=str(tmp_path / "data"), SWINUNETR_RUNS_DIR=str(tmp_path / "artifacts"))
    proc = subprocess.run([sys.executable, str(CHECK), "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout[-5000:], proc.stderr[-3000:])
    report = json.loads((out / "browser_report.json").read_text())
    results = {Path(r["notebook"]).name: r for r in report["results"]}
    assert proc.returncode == 0, [r["errors"] for r in report["results"] if r["errors"]]
    # every notebook of notebooks/ was checked; the ones run here executed all cells and drew figures
    expected = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(n.removeprefix("executed_") for n in results) == expected
    ran = [r for r in results.values() if r["mode"] == "run"]
    assert ran, "no notebook was executed in the browser"
    for r in ran:
        assert r["executed_cells"] == r["code_cells"] > 0
        assert r["rendered_imgs"] >= r["png_outputs"] > 0
        assert all((REPO / s).stat().st_size > 10_000 for s in r["screenshots"])
    # notebook 05's NiiVue viewer drew the CT with its labels through WebGL (software rendering)
    if importlib.util.find_spec("ipyniivue") is not None:
        nb05 = results["05_visualize_3d.ipynb"]
        assert nb05["canvases"], f"no NiiVue canvas in notebook 05 (WebGL: {nb05['webgl']})"
        bc = _browser_check()
        for stats in nb05["canvases"]:
            assert bc.canvas_problem(stats) is None
            assert bc.canvas_problem(bc.canvas_stats(REPO / stats["path"])) is None  # the kept screenshot


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.xdist_group("runs_browser")  # all write runs/browser: one process
def test_niivue_compare_draws_truth_and_prediction_in_the_browser(tmp_path):
    """viz_niivue.niivue_compare in JupyterLab: two WebGL canvases, the CT with its labels in each, and the
    prediction (the liver left out) visibly has fewer organ pixels than the ground truth."""
    if not Path("/usr/bin/chromium").is_file():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium missing in CI: apt-get update && apt-get install -y chromium")
        pytest.skip("/usr/bin/chromium not installed (apt-get update && apt-get install -y chromium)")
    pytest.importorskip("ipyniivue")
    import nbformat
    from playwright.sync_api import sync_playwright

    bc = _browser_check()
    out = REPO / "runs" / "browser" / "niivue_compare"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "import nibabel as nib\nimport numpy as np\n"
        "from swinunetr_lib.viz import figures as viz, niivue as viz_niivue\n"
        "from swinunetr_lib.data.labels import totalseg_to_btcv\n"
        "from swinunetr_lib.data.example_data import fetch_example\n"
        "ct = np.asarray(nib.load(fetch_example('example_ct_sm.nii.gz')).dataobj, dtype=np.float32)\n"
        "truth, _ = totalseg_to_btcv(np.asarray(nib.load(fetch_example('example_seg.nii.gz')).dataobj))\n"
        "pred = np.where(truth == 6, 0, truth)  # the liver missed\n"
        "viz.plot_triplanar(ct, truth, spacing=(3.0, 3.0, 3.0))"),
        nbformat.v4.new_code_cell("viz_niivue.niivue_compare(ct, pred, truth, spacing=(3.0, 3.0, 3.0))")]
    rel = Path("runs/browser/niivue_compare/notebooks/niivue_compare.ipynb")
    shutil.rmtree(REPO / rel.parent, ignore_errors=True)  # a jupytext .py pair left by an earlier run blocks the open
    (REPO / rel).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, REPO / rel)
    env = dict(os.environ, SWINUNETR_DATA_DIR=str(tmp_path / "data"), SWINUNETR_RUNS_DIR=str(tmp_path / "runs"),
               MPLBACKEND="Agg", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    port = bc.free_port()
    proc = bc.start_lab(port, tmp_path / "settings", env, tmp_path / "lab.log")
    try:
        bc.wait_http(f"http://127.0.0.1:{port}/api/status", proc, 120, tmp_path / "lab.log")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bc.CHROMIUM, args=bc.CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                res = bc.check_notebook(page, f"http://127.0.0.1:{port}", str(rel), "run", out, 300,
                                        expect_canvas=True)
            finally:
                browser.close()
    finally:
        bc.stop_lab(proc)
    assert res.ok, res.errors
    assert len(res.canvases) == 2, res.canvases
    truth_view, pred_view = res.canvases  # left, right
    assert all(bc.canvas_problem(c) is None for c in res.canvases)
    assert pred_view["label_share"] < 0.8 * truth_view["label_share"], res.canvases


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.xdist_group("runs_browser")  # all write runs/browser: one process
def test_book_reads_in_the_browser(tmp_path):
    """The book (issue #30) in headless Chromium (ci/book_check.py): every page loads with no console error and no
    request leaving the site, every image loads with a size, every internal link resolves, search finds a word of
    notebook 02; a screenshot of notebook 02's page. `make test` builds runs/book/smoke from the smoke runs before
    this step; without it the book is built here (from runs/smoke, or from notebooks with outputs written in)."""
    if not Path("/usr/bin/chromium").is_file():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium missing in CI: apt-get update && apt-get install -y chromium")
        pytest.skip("/usr/bin/chromium not installed (apt-get update && apt-get install -y chromium)")
    from book_runs import executed_runs

    from swinunetr_lib.notebooks.book import build

    site = REPO / "runs" / "book" / "smoke"
    if not (site / "build_report.json").is_file():
        smoke = REPO / "runs" / "smoke"
        runs = smoke if (smoke / "02_ssl_pretraining.ipynb").is_file() else executed_runs(tmp_path / "runs")
        site = tmp_path / "book"
        build(runs, site)
    out = REPO / "runs" / "browser" / "book"
    proc = subprocess.run([sys.executable, str(REPO / "ci" / "book_check.py"), str(site), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    print(proc.stdout[-5000:], proc.stderr[-3000:])
    report = json.loads((out / "book_report.json").read_text())
    assert proc.returncode == 0, report["problems"]
    built = json.loads((site / "build_report.json").read_text())
    assert report["pages"] == len(built["pages"]) > 10  # every page of the build was opened
    assert report["images"] > 0 and report["internal_links"] > report["pages"]
    assert "notebooks/02_ssl_pretraining.html" in report["search"]["results"]
    assert [Path(s).name for s in report["screenshots"]] == ["book_02_top.png", "book_02_figure.png"]
    assert all(Path(s).stat().st_size > 10_000 for s in report["screenshots"])
