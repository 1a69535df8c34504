"""Real-browser check: JupyterLab + headless Debian Chromium, driven by Playwright.

For every ``notebooks/NN_*.ipynb`` (enumerated, so new notebooks are picked up automatically):

- **run** mode (default for the cheap notebooks ``00``, ``01``, ``05``; ``--run all`` for every one):
  a copy with the smoke parameters injected (papermill's ``injected-parameters`` cell, validated by
  ``swinunetr_lib.notebooks.runner.load_params_file``) is opened in Lab and executed with "Run All Cells";
  we wait until the kernel is idle and no cell is pending, then check the notebook *as rendered*.
- **open** mode (the others, which train models): the copy executed by the papermill smoke run
  (``--executed-dir``, default ``runs/smoke``) is opened when it exists, else the clean notebook,
  and checked the same way without re-running it.

Checks per notebook: no ``error`` output in any cell, no "Error displaying widget" in the page, every
``image/png`` output rendered as a loaded ``<img>`` (a run notebook must have at least one), and the
JupyterLab shell has no error dialog; in 00, 01 and 05 every figure has alt text and a caption (a ``<figure>``
with ``<figcaption>``). Every ``<canvas>`` in an output (the NiiVue 3D viewer, drawn with WebGL,
which headless Chromium runs in software through SwiftShader) is photographed and must not be blank: enough
pixels off the background, many colours, and, for a CT with labels, coloured (organ) pixels among the grey
(:func:`canvas_stats`). Notebook 05, run with ``ipyniivue`` installed, must show at least one such canvas.
Screenshots go to ``--out`` (default ``runs/browser``): the top of each notebook, its first and last figure,
each canvas (``<stem>_3canvas<i>.png``) and the page around it (``<stem>_3canvas<i>_page.png``). A JSON
report (``browser_report.json``) lists the results.

Usage (from the repository root)::

    .venv/bin/python ci/browser_check.py                       # 00, 01, 05 run; others opened
    .venv/bin/python ci/browser_check.py --run all             # every notebook executed in the browser
    .venv/bin/python ci/browser_check.py --only 05             # one notebook

Needs ``/usr/bin/chromium`` (Debian: ``apt-get update && apt-get install -y chromium``); a browser is
never downloaded. The server listens on 127.0.0.1 on a free port without a token, uses throw-away
settings/workspace folders (notebook windowing off, so every output is in the DOM) and is always shut down.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
from matplotlib.image import imread
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from swinunetr_lib.notebooks.runner import load_params_file

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# WebGL without a GPU: ANGLE on SwiftShader (software); newer Chromium needs the "unsafe" flag to allow it
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
DEFAULT_RUN = ("00", "01", "05")
CAPTIONED_NOTEBOOKS = ("00", "01", "05")  # every figure with alt text and a "what to look at" caption
CANVAS_NOTEBOOKS = ("05",)  # run with ipyniivue installed, these must show a NiiVue (WebGL) canvas
# a canvas is blank unless this share of its pixels differs from the corner (background) colour and it has
# this many distinct colours; a CT with labels also needs this share of coloured pixels (organs over grey)
CANVAS_MIN_FOREGROUND = 0.02
CANVAS_MIN_COLOURS = 16
CANVAS_MIN_LABEL_SHARE = 0.005


@dataclass
class Result:
    notebook: str
    mode: str  # run | open | open-executed
    ok: bool = False
    seconds: float = 0.0
    code_cells: int = 0
    executed_cells: int = 0
    png_outputs: int = 0
    rendered_imgs: int = 0
    widgets: int = 0
    uncaptioned: int = 0  # figures without alt text and a caption
    errors: list[str] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    canvases: list[dict[str, Any]] = field(default_factory=list)  # canvas_stats of each output canvas
    webgl: str = ""  # the WebGL renderer the page got (e.g. SwiftShader)


# ---------------------------------------------------------------------------------------- preparation
def prepare(nb_path: Path, params_dir: Path | None, dest: Path) -> dict[str, Any]:
    """Copy ``nb_path`` to ``dest`` with the validated parameters of ``params_dir/<stem>.yml`` injected."""
    nb = load_notebook_node(str(nb_path))  # adds the metadata papermill's parameterizer expects
    params: dict[str, Any] = {}
    params_file = params_dir / f"{nb_path.stem}.yml" if params_dir else None
    if params_file is not None and params_file.is_file():
        params = load_params_file(params_file, nb_path.with_suffix(".py"))
    if params:
        nb = parameterize_notebook(nb, params, report_mode=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, settings: Path, env: dict[str, str], log: Path, *, python: str = sys.executable,
              root: Path = REPO) -> subprocess.Popen:
    """JupyterLab of ``python``'s environment on 127.0.0.1:port serving ``root``; no token, the app exposed
    as ``window.jupyterapp``, notebook windowing off."""
    user_settings = settings / "user-settings"
    tracker = user_settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = user_settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    cmd = [python, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", "--allow-root", "--IdentityProvider.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={user_settings}", f"--LabApp.workspaces_dir={settings / 'workspaces'}",
           "--LabApp.news_url=", "--ServerApp.allow_remote_access=False"]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout_s:.0f} s; log {log}")


def stop_lab(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels (own session)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------- in the browser
JS_READY = """() => {
  const app = window.jupyterapp; if (!app) return 'no app';
  const w = app.shell.currentWidget; if (!w || !w.content || !w.sessionContext) return 'no notebook';
  const s = w.sessionContext; if (!s.session || !s.session.kernel) return 'no kernel';
  return s.session.kernel.status;
}"""

JS_STATE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const pending = cells.filter(c => (c.promptNode && c.promptNode.textContent || '').includes('*')).length;
  const executed = cells.filter(c => c.model.executionCount !== null).length;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return {code: cells.length, executed, pending, status: kernel ? kernel.status : 'none'};
}"""

JS_INSPECT = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const errors = []; let png = 0, widgets = 0;
  w.content.widgets.forEach((c, i) => {
    if (c.model.type !== 'code') return;
    const outs = c.model.outputs.toJSON();
    outs.forEach(o => {
      if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${String(o.evalue).slice(0, 300)}`);
      if (o.data && o.data['image/png']) png += 1;
      if (o.data && o.data['application/vnd.jupyter.widget-view+json']) widgets += 1;
    });
  });
  const imgs = Array.from(w.node.querySelectorAll('.jp-OutputArea-output img'));
  const loaded = imgs.filter(im => im.complete && im.naturalWidth > 0).length;
  // figures without alt text or a caption (issue #26: viz.captions.captioned), widgets' own images left out
  const uncaptioned = imgs.filter(im => !im.closest('.jupyter-widgets') && !(im.alt && im.alt !== 'Image'
    && im.closest('figure') && im.closest('figure').querySelector('figcaption'))).length;
  const text = w.node.innerText;
  ['Error displaying widget', 'model not found', 'Failed to load model class'].forEach(m => {
    if (text.includes(m)) errors.push(`page shows "${m}"`);
  });
  const dialog = document.querySelector('.jp-Dialog');
  if (dialog) errors.push('dialog: ' + dialog.innerText.slice(0, 300));
  return {errors, png, widgets, imgs: imgs.length, loaded, uncaptioned};
}"""


JS_WEBGL = """() => { const g = document.createElement('canvas').getContext('webgl2');
  if (!g) return 'no WebGL2';
  const info = g.getExtension('WEBGL_debug_renderer_info');
  return info ? g.getParameter(info.UNMASKED_RENDERER_WEBGL) : g.getParameter(g.RENDERER); }"""


def canvas_stats(png: Path) -> dict[str, Any]:
    """What a screenshot of a canvas shows: its size, the share of pixels that differ from the background
    (its most common colour) by more than 8/255, the number of distinct colours (64 levels per channel, so
    dithering does not count), and the share of coloured pixels
    (channel spread above 20/255: organ labels over a grey CT, even the dull liver brown at half opacity;
    pure red, the crosshair, left out)."""
    rgb = np.round(imread(str(png))[..., :3] * 255).astype(np.int16)  # (H, W, 3)
    h, w = rgb.shape[:2]
    levels, counts = np.unique(rgb.reshape(-1, 3) // 4, axis=0, return_counts=True)  # 64 levels per channel
    background = levels[np.argmax(counts)] * 4  # the most common colour
    foreground = np.abs(rgb - background).max(axis=-1) > 8
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    crosshair = (rgb[..., 0] > 230) & (rgb[..., 1] < 30) & (rgb[..., 2] < 30)
    colours = len(levels)
    return {"path": str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png), "width": int(w),
            "height": int(h), "foreground": round(float(foreground.mean()), 4), "colours": int(colours),
            "label_share": round(float(((spread > 20) & ~crosshair).mean()), 4)}


def canvas_problem(stats: dict[str, Any], *, labels: bool = True) -> str | None:
    """Why a canvas counts as blank (or as a CT without its labels), or ``None``."""
    if stats["width"] < 50 or stats["height"] < 50:
        return f"canvas {stats['path']} is {stats['width']} x {stats['height']} px"
    if stats["foreground"] < CANVAS_MIN_FOREGROUND or stats["colours"] < CANVAS_MIN_COLOURS:
        return (f"blank canvas {stats['path']}: {stats['foreground']:.1%} of pixels off the background, "
                f"{stats['colours']} colours")
    if labels and stats["label_share"] < CANVAS_MIN_LABEL_SHARE:
        return f"canvas {stats['path']} shows no coloured labels ({stats['label_share']:.2%} coloured pixels)"
    return None


def check_canvases(page: Any, shots: Path, stem: str, res: Result, *, wait_s: float = 30.0) -> None:
    """Photograph every canvas in the open notebook's outputs (retrying while it is still blank: WebGL
    drawing in software takes a moment) and record its :func:`canvas_stats`; a blank one is an error."""
    canvases = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output canvas")
    for i in range(canvases.count()):
        canvas = canvases.nth(i)
        canvas.scroll_into_view_if_needed(timeout=10_000)
        path = shots / f"{stem}_3canvas{i}.png"
        t0 = time.monotonic()
        while True:
            time.sleep(1.0)
            canvas.screenshot(path=str(path))
            stats = canvas_stats(path)
            problem = canvas_problem(stats)
            if problem is None or time.monotonic() - t0 > wait_s:
                break
        canvas.evaluate("c => (c.closest('.jp-OutputArea-output') || c).scrollIntoView({block: 'center'})")
        time.sleep(0.5)  # the page around it: the widget's controls too
        page.screenshot(path=str(shots / f"{stem}_3canvas{i}_page.png"))
        res.canvases.append(stats)
        res.screenshots += [stats["path"], str((shots / f"{stem}_3canvas{i}_page.png").relative_to(REPO))]
        if problem is not None:
            res.errors.append(problem)


def wait_for(page: Any, js: str, done: Any, timeout_s: float, what: str) -> Any:
    t0 = time.monotonic()
    value = None
    while time.monotonic() - t0 < timeout_s:
        value = page.evaluate(js)
        if done(value):
            return value
        time.sleep(1.0)
    raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s (last state {value})")


def check_notebook(page: Any, base: str, rel: str, mode: str, out: Path, timeout_s: float, *,
                   expect_canvas: bool = False) -> Result:
    """Open (and in ``run`` mode execute) one notebook in Lab and check it as rendered; with ``expect_canvas``
    it must show at least one non-blank canvas (the NiiVue viewer)."""
    res = Result(notebook=rel, mode=mode)
    t0 = time.monotonic()
    stem = Path(rel).stem
    try:
        page.goto(f"{base}/lab/tree/{rel}?reset", wait_until="domcontentloaded", timeout=90_000)
        wait_for(page, JS_READY, lambda s: s == "idle", 120, f"{rel}: kernel start")
        if mode == "run":
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            time.sleep(2.0)
            idle_polls = {"n": 0}

            def finished(s: dict) -> bool:
                idle_polls["n"] = idle_polls["n"] + 1 if (s["status"] == "idle" and s["pending"] == 0) else 0
                return idle_polls["n"] >= 3

            state = wait_for(page, JS_STATE, finished, timeout_s, f"{rel}: run all cells")
            res.code_cells, res.executed_cells = state["code"], state["executed"]
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        else:
            state = page.evaluate(JS_STATE)
            res.code_cells, res.executed_cells = state["code"], state["executed"]
        time.sleep(1.5)  # let images decode
        info = page.evaluate(JS_INSPECT)
        res.errors += info["errors"]
        res.png_outputs, res.rendered_imgs, res.widgets = info["png"], info["loaded"], info["widgets"]
        if res.rendered_imgs < res.png_outputs:
            res.errors.append(f"only {res.rendered_imgs} of {res.png_outputs} PNG outputs rendered as images")
        res.uncaptioned = info["uncaptioned"]
        if stem.split("_")[0] in CAPTIONED_NOTEBOOKS and res.uncaptioned:
            res.errors.append(f"{res.uncaptioned} figure(s) without alt text and a caption (viz.captions.captioned)")
        if mode == "run":
            if res.executed_cells < res.code_cells:
                res.errors.append(f"only {res.executed_cells} of {res.code_cells} code cells executed")
            if res.png_outputs == 0 and res.rendered_imgs == 0:
                res.errors.append("no figure rendered")
        # screenshots: every canvas, the top, the first and the last figure
        shots = out / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        res.webgl = page.evaluate(JS_WEBGL)
        check_canvases(page, shots, stem, res)
        if expect_canvas and not res.canvases:
            res.errors.append(f"no canvas in the outputs (NiiVue viewer expected; WebGL: {res.webgl})")
        page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0")
        first = shots / f"{stem}_0top.png"
        page.screenshot(path=str(first))
        res.screenshots.append(str(first.relative_to(REPO)))
        imgs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
        n = imgs.count()
        for tag, idx in (("1first_figure", 0), ("2last_figure", n - 1)):
            if n == 0 or (tag.startswith("2") and n == 1):
                continue
            imgs.nth(idx).scroll_into_view_if_needed(timeout=10_000)
            time.sleep(0.5)
            path = shots / f"{stem}_{tag}.png"
            page.screenshot(path=str(path))
            res.screenshots.append(str(path.relative_to(REPO)))
    except Exception as err:  # reported per notebook, the check goes on
        res.errors.append(f"{type(err).__name__}: {err}")
        try:
            path = out / "screenshots" / f"{stem}_failure.png"
            page.screenshot(path=str(path))
            res.screenshots.append(str(path.relative_to(REPO)))
        except Exception:
            pass
    finally:
        try:  # shut the kernel down and close the tab so the next notebook starts clean
            page.evaluate("""async () => { const w = window.jupyterapp.shell.currentWidget;
                if (w && w.sessionContext) { await w.sessionContext.shutdown(); }
                await window.jupyterapp.commands.execute('application:close-all'); }""")
        except Exception:
            pass
    res.ok = not res.errors
    res.seconds = round(time.monotonic() - t0, 1)
    return res


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=",".join(DEFAULT_RUN),
                    help="notebook numbers executed in the browser, comma separated, or 'all' (default %(default)s)")
    ap.add_argument("--only", default="", help="check only these notebook numbers (comma separated)")
    ap.add_argument("--params", type=Path, default=REPO / "ci" / "params" / "smoke", help="parameter files injected")
    ap.add_argument("--executed-dir", type=Path, default=REPO / "runs" / "smoke",
                    help="papermill-executed copies opened (not re-run) for the notebooks not run here")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "browser")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per notebook run")
    ap.add_argument("--chromium", default=CHROMIUM)
    args = ap.parse_args(argv)

    if not Path(args.chromium).is_file():
        print(f"browser check: {args.chromium} not found; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if not out.is_relative_to(REPO):
        print(f"browser check: --out must be inside {REPO} (JupyterLab serves the repository)", file=sys.stderr)
        return 2
    shutil.rmtree(out / "screenshots", ignore_errors=True)
    shutil.rmtree(out / "notebooks", ignore_errors=True)
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only:
        notebooks = [p for p in notebooks if p.name[:2] in only]
    if not notebooks:
        print("browser check: no notebooks/NN_*.ipynb to check", file=sys.stderr)
        return 2
    run_set = {p.name[:2] for p in notebooks} if args.run == "all" else {s.strip() for s in args.run.split(",")}

    plan: list[tuple[str, str]] = []  # (path relative to REPO, mode)
    for nb in notebooks:
        if nb.name[:2] in run_set:
            dest = out / "notebooks" / nb.name
            prepare(nb, args.params, dest)
            plan.append((str(dest.relative_to(REPO)), "run"))
        else:
            executed = args.executed_dir.resolve() / nb.name
            if executed.is_file() and executed.is_relative_to(REPO):
                dest = out / "notebooks" / f"executed_{nb.name}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(executed, dest)
                plan.append((str(dest.relative_to(REPO)), "open-executed"))
            else:
                plan.append((str(nb.relative_to(REPO)), "open"))

    env = dict(os.environ)
    env.setdefault("SWINUNETR_DATA_DIR", str(out / "data"))
    env.setdefault("SWINUNETR_RUNS_DIR", str(out / "artifacts"))
    env.setdefault("MPLBACKEND", "Agg")
    settings = Path(tempfile.mkdtemp(prefix="lab-settings-"))
    env["JUPYTER_RUNTIME_DIR"] = str(settings / "runtime")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = out / "jupyterlab.log"
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    results: list[Result] = []
    proc = start_lab(port, settings, env, log)
    try:
        wait_http(f"{base}/api/status", proc, 120, log)
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 — optional: tests use the helpers without it

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                niivue = importlib.util.find_spec("ipyniivue") is not None  # the kernel runs this Python
                for rel, mode in plan:
                    print(f"[browser] {mode:13s} {rel} ...", flush=True)
                    expect = niivue and mode == "run" and Path(rel).name[:2] in CANVAS_NOTEBOOKS
                    r = check_notebook(page, base, rel, mode, out, args.timeout, expect_canvas=expect)
                    results.append(r)
                    print(f"[browser]   {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f} s: {r.executed_cells}/"
                          f"{r.code_cells} cells, {r.rendered_imgs} images, {r.widgets} widgets, "
                          f"{len(r.canvases)} canvases (WebGL: {r.webgl or '-'})"
                          + "".join(f"\n[browser]   ! {e}" for e in r.errors), flush=True)
            finally:
                browser.close()
    finally:
        stop_lab(proc)
        shutil.rmtree(settings, ignore_errors=True)
    total = time.monotonic() - t_start
    report = {"seconds": round(total, 1), "port": port, "results": [asdict(r) for r in results]}
    (out / "browser_report.json").write_text(json.dumps(report, indent=2))
    failed = [r.notebook for r in results if not r.ok]
    print(f"[browser] {len(results) - len(failed)}/{len(results)} notebooks ok in {total:.0f} s; "
          f"screenshots in {out / 'screenshots'}; report {out / 'browser_report.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
