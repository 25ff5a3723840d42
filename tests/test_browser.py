"""The built book as a reader sees it: every page loaded in a real browser (headless Chromium).

Runs after the book build (`make browser`, part of `make test`) against ``_build/html``, or against the
directory named by ``BOOK_HTML``. The site is served on a loopback HTTP server and every request for
anything that is not on that server is blocked and reported, so each page is checked as it renders
without the internet. Each page is loaded once, in one browser; then, per page:

- no JavaScript console error or uncaught exception, no failed request for a resource of the site;
- every image has loaded (natural width > 0) and has alternative text;
- every equation has been typeset by MathJax (no raw ``$$`` / ``\\(`` left, no MathJax error);
- every link within the site resolves to a file of the site, and its ``#fragment`` to an element;
- no serious or critical accessibility violation found by axe-core;
- nothing was fetched from outside the site (MathJax, fonts, scripts, styles are the book's own)
  and the page still rendered: its stylesheets and fonts loaded and its equations typeset;
- a full-page screenshot is written to ``_build/screenshots/`` (next to the HTML directory) for review.

The browser is ``BOOK_CHROMIUM`` if set, else the first of /usr/bin/chromium, chromium, chromium-browser,
google-chrome found; without one (or without Playwright) the tests are skipped and say why.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = HTML.parent / "screenshots"
#: Chromium's flags: without the background-networking ones it tries to reach Google at start-up.
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Folders of the site that hold assets, not pages.
ASSET_DIRS = {"_static", "_sources", "_images", "mathjax", "_downloads"}
#: The pages' own elements are typeset by MathJax; anything else with these is raw TeX left over.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|\\begin\{")
SERIOUS = {"serious", "critical"}


def _find_chromium() -> str | None:
    if os.environ.get("BOOK_CHROMIUM"):
        return os.environ["BOOK_CHROMIUM"]
    candidates = ["/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def _pages() -> list[str]:
    if not (HTML / "intro.html").exists():
        return []
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        relative = path.relative_to(HTML)
        if relative.parts[0] in ASSET_DIRS or relative.name == "index.html":
            continue  # index.html only redirects to intro.html (test_front_page_redirects)
        pages.append(relative.as_posix())
    return pages


PAGES = _pages()
CHROMIUM = _find_chromium()

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the pinned environment has it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="Playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's `chromium` (as .ci/run does) "
                       "or set BOOK_CHROMIUM to a Chromium-based browser"),
    pytest.mark.skipif(not PAGES, reason=f"no built book in {HTML}: run `make book` first (or set BOOK_HTML)"),
]


@dataclass
class PageReport:
    """What one visit of a page found, by check."""

    page: str
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    math: list[str] = field(default_factory=list)
    accessibility: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (href as written, absolute URL)
    rendering: list[str] = field(default_factory=list)
    wide_math: list[str] = field(default_factory=list)
    screenshot: Path | None = None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


#: Run in the page once it has loaded: waits for MathJax and the fonts, forces lazy images to load.
_SETTLE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all(Array.from(document.images, img => img.decode().catch(() => null)));
  await document.fonts.ready;
}"""

#: Everything the checks need from the page, in one round trip.
_INSPECT = r"""() => {
  const images = Array.from(document.images, img => ({
    src: img.getAttribute("src"), complete: img.complete, width: img.naturalWidth,
    alt: img.getAttribute("alt")}));
  const unrendered = Array.from(document.querySelectorAll(".math"))
    .filter(el => !el.querySelector("mjx-container"))
    .map(el => el.textContent.trim().slice(0, 80));
  const errors = Array.from(document.querySelectorAll("mjx-merror"), el =>
    (el.getAttribute("data-mjx-error") || el.textContent).slice(0, 120));
  // MathJax shows an undefined TeX command as its name in red (the noundefined extension)
  const undefinedTex = Array.from(document.querySelectorAll('mjx-container mjx-mtext[style*="color: red"]'),
    el => { const mml = el.closest("mjx-container").querySelector('mtext[mathcolor="red"]');
            return mml ? mml.textContent : "(see the page)"; });
  const skip = "PRE,CODE,SCRIPT,STYLE,TEXTAREA,MJX-CONTAINER";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode: node => node.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const texts = [];
  while (walker.nextNode()) { texts.push(walker.currentNode.textContent); }
  const links = Array.from(document.querySelectorAll("a[href]"), a => [a.getAttribute("href"), a.href]);
  const sheets = Array.from(document.styleSheets, sheet => {
    try { return [sheet.href, sheet.cssRules.length]; } catch (e) { return [sheet.href, -1]; } });
  const fonts = Array.from(document.fonts, f => [f.family, f.status]);
  const mathjax = !!(window.MathJax && MathJax.startup && MathJax.startup.document);
  // display equations wider than the text column (the reader would have to scroll them sideways)
  const wide = [];
  if (mathjax) {
    for (const item of MathJax.startup.document.math) {
      const el = item.typesetRoot;
      if (!item.display || !el) { continue; }
      const box = el.parentElement || el;
      if (Math.max(el.scrollWidth, box.scrollWidth) > box.clientWidth + 2) {
        wide.push(item.math.replace(/\s+/g, " ").trim().slice(0, 80));
      }
    }
  }
  return {images, unrendered, errors, undefinedTex, texts, links, sheets, fonts, mathjax, wide,
          hasMath: document.querySelector(".math") !== null};
}"""


class Book:
    """One browser, one page, the site on a loopback server; each page visited once."""

    def __init__(self, playwright, chromium: str):
        handler = functools.partial(_QuietHandler, directory=str(HTML))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}/"
        self.browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.current.console.append(f"uncaught exception: {error}"))
        self.page.on("requestfailed", self._on_failed)
        self.page.on("response", self._on_response)
        self.reports: dict[str, PageReport] = {}
        self.current = PageReport("(none)")
        from axe_playwright_python.sync_playwright import Axe

        self.axe = Axe()

    def close(self) -> None:
        self.browser.close()
        self.server.shutdown()
        self.server.server_close()

    def _local(self, url: str) -> bool:
        return url.startswith(self.base) or urlsplit(url).scheme in ("data", "blob", "about")

    def _route(self, route) -> None:
        url = route.request.url
        if self._local(url):
            route.continue_()
        else:  # the book must not need the internet
            self.current.offline.append(f"requested {url} (blocked: the page must work offline)")
            route.abort("blockedbyclient")

    def _on_console(self, message) -> None:
        if message.type == "error" and "net::ERR_BLOCKED_BY_CLIENT" not in message.text:
            location = message.location.get("url", "") if message.location else ""
            self.current.console.append(f"console error: {message.text} ({location.removeprefix(self.base)})")

    def _on_failed(self, request) -> None:
        if self._local(request.url):
            self.current.requests.append(f"{request.url.removeprefix(self.base)} failed: {request.failure}")

    def _on_response(self, response) -> None:
        if response.status >= 400 and self._local(response.url):
            self.current.requests.append(f"{response.url.removeprefix(self.base)} answered HTTP {response.status}")

    def visit(self, page: str) -> PageReport:
        if page in self.reports:
            return self.reports[page]
        report = self.current = PageReport(page)
        self.page.goto(self.base + page, wait_until="load")
        self.page.evaluate(_SETTLE)
        found = self.page.evaluate(_INSPECT)
        for image in found["images"]:
            if not image["complete"] or image["width"] == 0:
                report.images.append(f"image {image['src']} did not load")
            if not (image["alt"] or "").strip():
                report.images.append(f"image {image['src']} has no alternative text")
        report.math += [f"equation not typeset by MathJax: {text}" for text in found["unrendered"]]
        report.math += [f"MathJax error: {text}" for text in found["errors"]]
        report.math += [f"undefined TeX command {text}" for text in found["undefinedTex"]]
        raw = [text.strip()[:80] for text in found["texts"] if RAW_TEX.search(text)]
        report.math += [f"raw TeX left in the page: {text!r}" for text in raw]
        if found["hasMath"] and not found["mathjax"]:
            report.math.append("the page has equations but MathJax did not start")
        report.wide_math = [f"display equation wider than the text column: {tex}" for tex in found["wide"]]
        report.rendering += [f"stylesheet {href} did not load" for href, rules in found["sheets"] if rules == 0]
        report.rendering += [f"font {family} failed to load" for family, status in found["fonts"] if status == "error"]
        report.links = [tuple(link) for link in found["links"]]
        results = self.axe.run(self.page)
        for violation in results.response["violations"]:
            if violation["impact"] in SERIOUS:
                targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
                report.accessibility.append(
                    f"{violation['impact']} {violation['id']}: {violation['help']} "
                    f"({len(violation['nodes'])} element(s), e.g. {targets})")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        report.screenshot = SCREENSHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")
        self.page.screenshot(path=str(report.screenshot), full_page=True, animations="disabled")
        self.reports[page] = report
        return report


@pytest.fixture(scope="module")
def book():
    with sync_playwright() as playwright:
        book = Book(playwright, CHROMIUM)
        try:
            yield book
        finally:
            book.close()


def _fail_if(page: str, what: str, problems: list[str]) -> None:
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        pytest.fail(f"{page}: {what}:\n{listed}{more}", pytrace=False)


@functools.cache
def _ids(path: Path) -> frozenset[str]:
    """The element ids (and anchor names) of a page of the site, from its HTML."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(m.group(2) for m in re.finditer(r"""\s(id|name)=["']([^"']+)["']""", text))


def _resolve(book: Book, page: str, href: str, url: str) -> str | None:
    """Why a link within the site does not resolve, or None."""
    if not url.startswith(book.base):
        return None  # outside the site: launch buttons, DOIs, the repository (not followed)
    address, fragment = urldefrag(url)
    relative = unquote(urlsplit(address).path).lstrip("/")
    target = HTML / relative
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"link {href!r} leads to a missing file ({relative or '/'})"
    if fragment and target.suffix == ".html" and unquote(fragment) not in _ids(target):
        return f"link {href!r} leads to {target.relative_to(HTML).as_posix()} but no element there has id {fragment!r}"
    return None


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors(book, page):
    report = book.visit(page)
    _fail_if(page, "JavaScript errors or failed requests", report.console + report.requests)


@pytest.mark.parametrize("page", PAGES)
def test_images_loaded_and_described(book, page):
    _fail_if(page, "images", book.visit(page).images)


@pytest.mark.parametrize("page", PAGES)
def test_equations_typeset(book, page):
    _fail_if(page, "equations", book.visit(page).math)


@pytest.mark.parametrize("page", PAGES)
def test_display_equations_fit_the_column(book, page):
    _fail_if(page, "equations too wide (split them over lines, e.g. with gathered or aligned)",
             book.visit(page).wide_math)


@pytest.mark.parametrize("page", PAGES)
def test_links_within_the_site_resolve(book, page):
    report = book.visit(page)
    broken = sorted({why for href, url in report.links if (why := _resolve(book, page, href, url))})
    _fail_if(page, "broken links", broken)


@pytest.mark.parametrize("page", PAGES)
def test_no_serious_accessibility_violations(book, page):
    _fail_if(page, "accessibility violations found by axe-core (serious or critical)", book.visit(page).accessibility)


@pytest.mark.parametrize("page", PAGES)
def test_page_works_offline(book, page):
    report = book.visit(page)
    _fail_if(page, "needs the internet or did not render without it", report.offline + report.rendering)


@pytest.mark.parametrize("page", PAGES)
def test_screenshot_written(book, page):
    shot = book.visit(page).screenshot
    assert shot is not None and shot.stat().st_size > 10_000, f"{page}: no screenshot in {SCREENSHOTS}"


def test_every_chapter_is_a_page():
    chapters = sorted(p.stem for p in (ROOT / "chapters").glob("*.md"))
    toc = (ROOT / "_toc.yml").read_text()
    listed = [stem for stem in chapters if f"chapters/{stem}" in toc]
    missing = [stem for stem in listed if f"chapters/{stem}.html" not in PAGES]
    assert not missing, f"chapters in _toc.yml without a page in {HTML}: {missing} (is the build stale?)"


def test_front_page_redirects(book):
    book.page.goto(book.base + "index.html", wait_until="load")
    book.page.wait_for_url("**/intro.html", timeout=10_000)
    assert book.page.url.endswith("/intro.html"), f"index.html should lead to intro.html, got {book.page.url}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("chapters/")])
def test_install_cell_is_hidden(page):
    """The Colab install cell (tests/test_install_cell.py) is tagged remove-cell: readers never see it."""
    html = (HTML / page).read_text(encoding="utf-8")
    assert "find_spec" not in html and "git+https://" not in html, f"{page}: the install cell is shown in the book"


def test_execution_report_lists_every_chapter_with_its_time_status_and_the_versions():
    """execution.html: MyST-NB's execution statistics, one row per chapter of the book, and the versions."""
    html = (HTML / "execution.html").read_text(encoding="utf-8")
    rows = dict(re.findall(r'<span class="doc">chapters/([\w-]+)</span>(.*?)</tr>', html, re.DOTALL))
    toc = re.findall(r"file:\s*chapters/([\w-]+)", (ROOT / "_toc.yml").read_text())
    assert sorted(rows) == sorted(toc), f"execution report rows {sorted(rows)} != chapters of the book {sorted(toc)}"
    for stem, row in rows.items():
        cells = re.findall(r"<td><p>(.*?)</p></td>", row)  # modified, method, run time (s), status
        assert re.fullmatch(r"\d+\.\d+", cells[2]), f"chapters/{stem}: no run time in the report ({cells})"
        assert cells[3] == "✅", f"chapters/{stem}: execution status {cells[3]!r} in the report"
    deepgrad = '<span class="pre">deepgrad</span>'
    for software in ("Python", "PyTorch", deepgrad):
        version = re.search(re.escape(software) + r".*?</td>\s*<td><p>([^<]+)</p>", html, re.DOTALL)
        assert version and re.match(r"\d+\.\d+", version.group(1)), f"execution report: no version of {software}"


def test_gradient_flow_explorer_redraws_from_the_stored_values(book):
    """chapters/causes.html: the explorer opens at its default with the number the text glues, and
    keyboard moves of its sliders (and a new activation) redraw the measured points from the stored data."""
    import json

    page = book.page
    page.goto(book.base + "chapters/causes.html", wait_until="load")
    root = page.locator(".dg-explorer").first
    data = json.loads(root.locator("script.dg-explorer-data").text_content())

    def shown():
        dots = root.locator("g.dg-measured")
        return (root.get_attribute("data-position"), json.loads(dots.get_attribute("data-values")),
                dots.locator("circle").count(), root.locator("p.dg-explorer-readout").text_content(),
                root.locator("path.dg-predicted").first.get_attribute("d"))

    def expect(position, state):
        point = data["points"][",".join(map(str, position))]
        assert state[0] == ",".join(map(str, position))
        assert state[1] == point["m"], "the measured points are not the stored ones"
        assert state[2] == sum(v is not None for v in point["m"]) == data["depths"][position[2]]
        assert point["f"][0] in state[3] and point["f"][1] in state[3]

    a, s, d = data["default"]
    before = shown()
    expect((a, s, d), before)
    # the text quotes the default position's measured number (glued by the chapter)
    prose = page.locator("article").inner_text()
    assert prose.count(data["points"][f"{a},{s},{d}"]["f"][0]) >= 2, "the default number is not in the text"

    scale = root.locator("input[type=range]").nth(0)
    scale.focus()
    page.keyboard.press("ArrowRight")
    after = shown()
    expect((a, s + 1, d), after)
    assert after[4] != before[4], "the prediction line did not change"
    assert scale.get_attribute("aria-valuetext") == f"{data['scales'][s + 1]:g}"

    depth = root.locator("input[type=range]").nth(1)
    depth.focus()
    page.keyboard.press("ArrowLeft")
    expect((a, s + 1, d - 1), shown())
    other = (a + 1) % len(data["activations"])
    root.locator("select").select_option(str(other))
    expect((other, s + 1, d - 1), shown())

    # on a phone the figure fits the screen
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.reload(wait_until="load")
        box = page.locator(".dg-explorer svg").first.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
