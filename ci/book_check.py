"""Real-browser check of the book (``make book``, ``python -m swinunetr_lib.notebooks.book``): headless Debian
Chromium driven by Playwright, as ci/browser_check.py drives JupyterLab.

The built site is served from 127.0.0.1 (a static file server in this process, as any static host would) and every
HTML page is opened. Checks:

- every page loads with no console error, no uncaught exception, no failed request and no request that leaves the
  server (a CDN script, a web font: the book must read offline);
- every image loads (``naturalWidth`` > 0) and is drawn with a size (scrolled into view first);
- every link inside the site resolves: the file exists (HTTP 200) and, for ``page.html#anchor``, the anchor is an
  ``id`` on that page;
- search (Sphinx's own index, in the browser) finds ``--search`` (default: a word of notebook 02's text) and lists
  ``--search-page`` among its results.

Screenshots (``--out``, default ``runs/browser/book``): the top of notebook 02's page and the page at its first
figure (``book_02_top.png``, ``book_02_figure.png``), and the search results. A JSON report (``book_report.json``)
lists the results; exit 1 on any error.

Usage (from the repository root)::

    .venv/bin/python ci/book_check.py runs/book/smoke
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import re
import socketserver
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL_HINT = "apt-get update && apt-get install -y chromium"
SEARCH_WORD = "inpainting"
SEARCH_PAGE = "notebooks/02_ssl_pretraining.html"
SCREENSHOT_PAGE = "notebooks/02_ssl_pretraining.html"

JS_IMAGES = """async () => {
  const out = [];
  for (const im of Array.from(document.querySelectorAll('main img, article img, .bd-content img'))) {
    im.scrollIntoView({block: 'center'});
    if (!im.complete) await new Promise(r => { im.onload = im.onerror = r; setTimeout(r, 5000); });
    const box = im.getBoundingClientRect();
    out.push({src: im.currentSrc || im.src, natural: im.naturalWidth, width: box.width, height: box.height});
  }
  window.scrollTo(0, 0);
  return out;
}"""
JS_LINKS = """() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"""
JS_SEARCH = """() => Array.from(document.querySelectorAll('#search-results li a, ul.search li a'))
  .map(a => a.getAttribute('href'))"""


@dataclass
class PageResult:
    page: str
    ok: bool = False
    images: int = 0
    links: int = 0
    errors: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the base class's name
        pass


def serve(site: Path) -> tuple[socketserver.TCPServer, str]:
    """A static file server for ``site`` on 127.0.0.1 (a free port), in a daemon thread."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def anchor_ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def check_links(site: Path, base: str, links: dict[str, str]) -> list[str]:
    """``links``: {absolute URL inside the site: the page it is on}. The problems: a missing file (not HTTP 200) or
    an anchor that is not an ``id`` on its page."""
    problems: list[str] = []
    ids: dict[str, set[str]] = {}
    for url, where in sorted(links.items()):
        target, fragment = urldefrag(url)
        path = unquote(urlparse(target).path)
        if path.endswith("/"):
            path += "index.html"
        if target not in ids:
            try:
                with urllib.request.urlopen(target, timeout=10) as r:
                    body = r.read()
                    ids[target] = anchor_ids(body.decode("utf-8", "replace")) if path.endswith(".html") else set()
            except OSError as err:
                problems.append(f"{where}: link to {path} does not resolve ({err})")
                ids[target] = set()
                continue
        if fragment and path.endswith(".html") and unquote(fragment) not in ids[target]:
            problems.append(f"{where}: link to {path}#{fragment}: no such anchor on that page")
    return problems


def check_page(page: Any, base: str, rel: str, links: dict[str, str]) -> PageResult:
    """Open one page; record its console errors, failed or outside requests and images, and collect its links."""
    res = PageResult(page=rel)
    events: list[str] = []
    origin = urlparse(base).netloc

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            events.append(f"console error: {msg.text[:300]}")

    def on_request(req: Any) -> None:
        if urlparse(req.url).scheme in ("http", "https") and urlparse(req.url).netloc != origin:
            events.append(f"request leaves the site: {req.url[:200]}")

    def on_response(resp: Any) -> None:
        if resp.status >= 400:
            events.append(f"HTTP {resp.status}: {resp.url[len(base):][:200]}")

    def on_failed(req: Any) -> None:
        # net::ERR_ABORTED: the browser dropped a request of its own (e.g. the favicon when the check moves on), not a
        # missing file (a 404 is a response, above; an image that did not load is caught by the image check)
        if "ERR_ABORTED" not in str(req.failure):
            events.append(f"request failed: {req.url[:200]} ({req.failure})")

    handlers = {"console": on_console, "pageerror": lambda e: events.append(f"page error: {str(e)[:300]}"),
                "requestfailed": on_failed,
                "request": on_request, "response": on_response}
    for name, fn in handlers.items():
        page.on(name, fn)
    try:
        page.goto(f"{base}/{rel}", wait_until="load", timeout=60_000)
        images = page.evaluate(JS_IMAGES)
        res.images = len(images)
        for im in images:
            if im["natural"] == 0:
                res.errors.append(f"image did not load: {im['src'][len(base):][:200]}")
            elif im["width"] < 1 or im["height"] < 1:
                res.errors.append(f"image has no size: {im['src'][len(base):][:200]}")
        hrefs = page.evaluate(JS_LINKS)
        for href in hrefs:
            if href.startswith(base + "/"):
                links.setdefault(href, rel)
        res.links = len(hrefs)
    except Exception as err:  # reported per page, the check goes on
        res.errors.append(f"{type(err).__name__}: {str(err)[:300]}")
    finally:
        for name, fn in handlers.items():
            page.remove_listener(name, fn)
    res.errors = events + res.errors
    res.ok = not res.errors
    return res


def check_search(page: Any, base: str, word: str, expected: str, shot: Path) -> tuple[list[str], list[str]]:
    """Search the site for ``word`` in the browser; (the result links, the problems)."""
    page.goto(f"{base}/search.html?q={word}", wait_until="load", timeout=60_000)
    found: list[str] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        found = page.evaluate(JS_SEARCH)
        if found:
            break
        time.sleep(0.5)
    page.screenshot(path=str(shot))
    pages = [urldefrag(h)[0].split("?")[0] for h in found]
    if not found:
        return pages, [f"search for {word!r} found nothing"]
    if expected not in pages:
        return pages, [f"search for {word!r} does not list {expected} (found {pages[:8]})"]
    return pages, []


def screenshots(page: Any, base: str, rel: str, out: Path) -> list[str]:
    """The top of ``rel`` and the page at its first figure."""
    shots = []
    page.goto(f"{base}/{rel}", wait_until="load", timeout=60_000)
    top = out / "book_02_top.png"
    page.screenshot(path=str(top))
    shots.append(str(top))
    figure = page.locator("main img").first
    if page.locator("main img").count():
        figure.scroll_into_view_if_needed(timeout=10_000)
        page.evaluate("() => window.scrollBy(0, -120)")  # the cell above the figure too
        time.sleep(0.3)
        path = out / "book_02_figure.png"
        page.screenshot(path=str(path))
        shots.append(str(path))
    return shots


def check_book(browser: Any, site: Path, out: Path, *, word: str = SEARCH_WORD, search_page: str = SEARCH_PAGE,
               shot_page: str = SCREENSHOT_PAGE) -> dict[str, Any]:
    """Every page of the built site ``site`` in ``browser`` (a Playwright browser); the report (``ok`` when no
    page, link or search has a problem)."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    rels = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    server, base = serve(site)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        links: dict[str, str] = {}
        results = [check_page(page, base, rel, links) for rel in rels]
        link_problems = check_links(site, base, links)
        found, search_problems = check_search(page, base, word, search_page, out / "book_search.png")
        shots = screenshots(page, base, shot_page, out) if (site / shot_page).is_file() else []
        page.close()
    finally:
        server.shutdown()
        server.server_close()
    problems = [f"{r.page}: {e}" for r in results for e in r.errors] + link_problems + search_problems
    return {"ok": not problems, "seconds": round(time.monotonic() - t0, 1), "site": str(site), "pages": len(rels),
            "images": sum(r.images for r in results), "internal_links": len(links), "search": {"word": word,
            "results": found}, "screenshots": shots, "problems": problems, "results": [asdict(r) for r in results]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, help="the built book (the folder with index.html)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "browser" / "book")
    ap.add_argument("--search", default=SEARCH_WORD, help="a word to search for (default %(default)s)")
    ap.add_argument("--search-page", default=SEARCH_PAGE, help="a page the search must list (default %(default)s)")
    ap.add_argument("--chromium", default=CHROMIUM)
    args = ap.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"book check: {args.site}: no index.html; build the book first (make book)", file=sys.stderr)
        return 2
    if not Path(args.chromium).is_file():
        print(f"book check: {args.chromium} not found; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 — optional: tests use the helpers without it

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            report = check_book(browser, args.site.resolve(), args.out.resolve(), word=args.search,
                                search_page=args.search_page)
        finally:
            browser.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "book_report.json").write_text(json.dumps(report, indent=2))
    for p in report["problems"]:
        print(f"[book] ! {p}")
    print(f"[book] {'ok' if report['ok'] else 'FAILED'}: {report['pages']} pages, {report['images']} images, "
          f"{report['internal_links']} internal links, search {args.search!r}: {len(report['search']['results'])} "
          f"results, in {report['seconds']:.0f} s; screenshots {', '.join(report['screenshots'])}; "
          f"report {args.out / 'book_report.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
