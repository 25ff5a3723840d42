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

Then, as a reader at 390 px (a phone) and 1280 px (a desktop), each in a fresh browser context: the
chapter menu, the page-contents button and previous/next are clicked and their panels and links
checked; the colour mode is switched and the figures' dark treatment measured (screenshots
``interaction-*.png``); each chapter's subject is searched for; hover previews are opened. No page
may link to the placeholder repository ``OWNER/REPO``.

The browser is ``BOOK_CHROMIUM`` if set, else the first of /usr/bin/chromium, chromium, chromium-browser,
google-chrome found; without one (or without Playwright) the tests are skipped and say why.
"""

from __future__ import annotations

import functools
import http.server
import itertools
import math
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


# --- The reader's interactions: navigation, colour mode, search (each in a fresh context per width) ---

#: The widths the book is read at: a phone (390 × 844) and a desktop (1280 × 900).
WIDTHS = {390: 844, 1280: 900}
#: A chapter in the middle of the book (it has a previous and a next page) with figures.
MIDDLE, PREVIOUS, NEXT = "chapters/batchnorm.html", "chapters/initialization.html", "chapters/residuals.html"
#: A chapter's subject, as a reader would search for it: the chapter must be the first result.
SUBJECTS = {
    "backprop": "backpropagation", "causes": "vanishing gradients", "diagnosing": "diagnosing",
    "activations": "activation functions", "initialization": "weight initialisation", "batchnorm": "batch norm",
    "residuals": "residual connections", "clipping": "gradient clipping", "recurrent": "recurrent networks",
    "optimizers": "optimisers", "tuning": "early stopping", "capstone": "capstone",
    "transformers": "transformers", "precision": "low-precision training",
    "normalization-free": "without normalisation",
}


@pytest.fixture
def reader(book, request):
    """A fresh page at the width ``request.param`` (offline like ``book``), and the errors it logged."""
    width = request.param
    context = book.browser.new_context(viewport={"width": width, "height": WIDTHS[width]})
    errors: list[str] = []

    def route(route):
        if book._local(route.request.url):
            route.continue_()
        else:
            errors.append(f"requested {route.request.url} (the page must work offline)")
            route.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: errors.append(f"uncaught exception: {error}"))
    page.on("console", lambda m: errors.append(f"console error: {m.text}")
            if m.type == "error" and "ERR_BLOCKED_BY_CLIENT" not in m.text else None)
    try:
        yield page, width, errors
    finally:
        context.close()


def _path(page, book) -> str:
    return urldefrag(page.url)[0].removeprefix(book.base)


@pytest.mark.parametrize("page", PAGES)
def test_one_header_and_one_button_of_each_sidebar(page):
    """The themes' scripts bind the first ``.primary-toggle``/``.secondary-toggle``: there must be only one,
    the visible one in the article header (no second header bar with its own buttons and search field)."""
    html = (HTML / page).read_text(encoding="utf-8")
    for toggle in ("primary-toggle", "secondary-toggle"):
        count = len(re.findall(rf'<button class="[^"]*\b{toggle}\b', html))
        assert count <= 1, f"{page}: {count} buttons with class {toggle}: the theme binds only the first"
    header = re.search(r'<header id="pst-header".*?</header>', html, re.DOTALL)
    assert header is None or "<button" not in header.group(0), \
        f"{page}: the header bar with a second search field and sidebar buttons is back"


@pytest.mark.parametrize("reader", list(WIDTHS), indirect=True, ids=lambda w: f"{w}px")
def test_chapter_menu_opens_and_its_links_work(book, reader):
    page, width, errors = reader
    page.goto(book.base + MIDDLE, wait_until="load")
    toggle = page.locator(".primary-toggle:visible")
    assert toggle.count() == 1, f"{width}px: no visible chapter-menu button"
    sidebar_link = page.locator(f'#pst-primary-sidebar a[href$="{NEXT.split("/")[1]}"]')
    if width < 960:  # a phone: the menu is a modal panel that the button opens
        assert not sidebar_link.is_visible(), f"{width}px: the chapter menu is open before the button is pressed"
        toggle.click()
        page.wait_for_function("() => document.querySelector('#pst-primary-sidebar-modal').open")
        link = page.locator(f'#pst-primary-sidebar-modal a[href$="{NEXT.split("/")[1]}"]')
    else:  # a desktop: the menu is shown; the button hides it and shows it again
        assert sidebar_link.is_visible(), f"{width}px: the chapter menu is not shown"
        toggle.click()
        page.wait_for_timeout(500)
        assert not sidebar_link.is_visible(), f"{width}px: the chapter-menu button does not hide the menu"
        toggle.click()
        page.wait_for_timeout(500)
        link = sidebar_link
    assert link.is_visible(), f"{width}px: the chapter menu did not open"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"interaction-chapter-menu-{width}.png"))
    link.click()
    page.wait_for_url(f"**/{NEXT}")
    assert _path(page, book) == NEXT
    assert not errors, errors


@pytest.mark.parametrize("reader", list(WIDTHS), indirect=True, ids=lambda w: f"{w}px")
def test_page_contents_open_and_their_links_work(book, reader):
    page, width, errors = reader
    page.goto(book.base + MIDDLE, wait_until="load")
    toggle = page.locator(".secondary-toggle:visible")
    if width < 1200:  # the page's contents are behind the button
        assert toggle.count() == 1, f"{width}px: no visible page-contents button"
        toggle.click()
        page.wait_for_function("() => document.querySelector('#pst-secondary-sidebar-modal').open")
        links = page.locator("#pst-secondary-sidebar-modal a.nav-link")
    else:  # a desktop: the contents are shown beside the text
        links = page.locator("#pst-secondary-sidebar a.nav-link")
    assert links.count() >= 3 and links.nth(1).is_visible(), f"{width}px: the page's contents did not open"
    page.screenshot(path=str(SCREENSHOTS / f"interaction-page-contents-{width}.png"))
    fragment = links.nth(1).get_attribute("href")
    links.nth(1).click()
    page.wait_for_function("hash => window.location.hash === hash", arg=fragment)
    heading = page.locator(fragment)
    assert heading.count() == 1, f"{width}px: the contents link {fragment} has no target"
    page.wait_for_timeout(500)
    box = heading.bounding_box()
    assert box is not None and 0 <= box["y"] < WIDTHS[width], f"{width}px: {fragment} was not scrolled into view"
    assert not errors, errors


@pytest.mark.parametrize("reader", list(WIDTHS), indirect=True, ids=lambda w: f"{w}px")
def test_previous_and_next_links_work(book, reader):
    page, width, errors = reader
    page.goto(book.base + MIDDLE, wait_until="load")
    page.locator("a.right-next").click()
    page.wait_for_url(f"**/{NEXT}")
    page.locator("a.left-prev").click()
    page.wait_for_url(f"**/{MIDDLE}")
    page.locator("a.left-prev").click()
    page.wait_for_url(f"**/{PREVIOUS}")
    assert _path(page, book) == PREVIOUS
    assert not errors, errors


def test_no_page_links_to_the_placeholder_repository():
    """While ``repository.url`` is the placeholder, no repository, edit, issue or launch button is built;
    once publishing has set the address, no link may still point at OWNER/REPO."""
    config = (ROOT / "_config.yml").read_text()
    placeholder = re.search(r"^\s*url:\s*\S*OWNER/REPO", config, re.MULTILINE) is not None
    for page in PAGES:
        html = (HTML / page).read_text(encoding="utf-8")
        assert "OWNER/REPO" not in html, f"{page}: a link to the placeholder repository OWNER/REPO"
        if placeholder:
            for button in ("mybinder.org/v2/", "colab.research.google.com/github/", "/edit/", "/issues/new"):
                assert button not in html, f"{page}: a button to {button} although the book has no repository"


def _switch_theme(page, wanted: str) -> None:
    """Press the colour-mode button until the page is in ``wanted`` mode (it cycles light, dark, auto)."""
    for _ in range(4):
        if page.evaluate("() => document.documentElement.dataset.theme") == wanted:
            return
        page.locator(".theme-switch-button:visible").first.click()
        page.wait_for_timeout(200)
    raise AssertionError(f"the colour-mode button never switched the page to {wanted} mode")


#: Draws one swatch per series colour (and black text) on white, as the book's figures are drawn.
_SWATCHES = """colors => new Promise(resolve => {
  const canvas = document.createElement("canvas");
  canvas.width = 40 * (colors.length + 2); canvas.height = 40;
  const g = canvas.getContext("2d");
  g.fillStyle = "#ffffff"; g.fillRect(0, 0, canvas.width, 40);
  [...colors, "#000000"].forEach((c, i) => { g.fillStyle = c; g.fillRect(40 * (i + 1) + 5, 5, 30, 30); });
  const figure = document.createElement("figure"); figure.id = "swatch-figure";
  const img = new Image(); img.alt = "swatches"; img.src = canvas.toDataURL("image/png");
  img.style.cssText = "width:" + canvas.width + "px;height:40px;max-width:none";
  figure.appendChild(img);
  document.querySelector(".bd-content article").prepend(figure);
  img.decode().then(() => resolve(canvas.width));
})"""


def _relative_luminance(rgb) -> float:
    def linear(c):
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b) -> float:
    la, lb = sorted((_relative_luminance(a), _relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _lab(rgb):
    def linear(c):
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb[:3])
    x, y, z = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _series_colours() -> list[str]:
    try:
        from deepgrad.plotting import PALETTE
    except ImportError:  # the book's environment has deepgrad; keep the Okabe-Ito defaults otherwise
        PALETTE = {"blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
                   "sky": "#56B4E9", "purple": "#CC79A7"}
    return sorted({c.upper() for name, c in PALETTE.items() if name not in ("yellow", "black")})


@pytest.mark.parametrize("reader", list(WIDTHS), indirect=True, ids=lambda w: f"{w}px")
def test_dark_mode_turns_the_figures_dark_and_keeps_their_colours_apart(book, reader):
    """In dark mode the figures (drawn for white) are shown as dark figures, not bright panels:
    their background matches the dark page, their text is light, every series colour keeps its hue
    family, keeps the palette's closest pair as far apart as in light mode (in CIELAB) and reads
    against the background at least as well as in light mode (or at 3:1). Switching back to light
    restores them. Screenshots of both modes are written."""
    import io

    from PIL import Image

    page, width, errors = reader
    chapter = "chapters/activations.html"
    page.goto(book.base + chapter, wait_until="load")
    page.evaluate(_SETTLE)
    colours = _series_colours()
    page.evaluate(_SWATCHES, colours)
    figure = page.locator("#swatch-figure img")
    measured = {}
    for mode in ("light", "dark"):
        _switch_theme(page, mode)
        page.wait_for_timeout(300)
        shot = Image.open(io.BytesIO(figure.screenshot(animations="disabled"))).convert("RGB")
        measured[mode] = [shot.getpixel((40 * i + 20, 20)) for i in range(len(colours) + 2)]
        filters = page.evaluate("""() => Array.from(document.querySelectorAll(".bd-content figure img"),
                                  img => getComputedStyle(img).filter)""")
        assert filters, f"{chapter}: no figure found"
        if mode == "dark":
            assert all("invert" in f for f in filters), f"dark mode: figures without the dark treatment: {filters}"
        else:
            assert all(f == "none" for f in filters), f"light mode: figures are filtered: {filters}"
        page.locator(".bd-content figure img").nth(1).scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / f"interaction-figures-{mode}-{width}.png"))
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page_bg = tuple(int(v) for v in re.findall(r"\d+", background)[:3])
    dark_bg, *dark_series, dark_text = measured["dark"]
    light_bg, *light_series, _ = measured["light"]
    assert max(abs(a - b) for a, b in zip(dark_bg, page_bg, strict=True)) <= 12, \
        f"dark mode: figure background {dark_bg} differs from the page's {page_bg}"
    assert _contrast(dark_text, dark_bg) >= 12, f"dark mode: figure text {dark_text} on {dark_bg} is not light"
    labs = [_lab(c) for c in dark_series]
    for i, colour in enumerate(colours):
        light_contrast, dark_contrast = _contrast(light_series[i], light_bg), _contrast(dark_series[i], dark_bg)
        assert dark_contrast >= min(3.0, light_contrast), \
            f"{colour}: contrast {dark_contrast:.2f} against the dark figure (light mode: {light_contrast:.2f})"
        hue_light, hue_dark = (math.degrees(math.atan2(lab[2], lab[1])) for lab in (_lab(light_series[i]), labs[i]))
        assert abs((hue_dark - hue_light + 180) % 360 - 180) <= 35, \
            f"{colour}: hue moved from {hue_light:.0f}° to {hue_dark:.0f}° in dark mode"
    # the palette is as distinguishable as its closest pair (CIELAB distance): in dark mode that pair
    # stays clearly apart (20 ΔE, about nine just-noticeable differences) and within 10 % of light mode's
    light_labs = [_lab(c) for c in light_series]
    closest_light = min(math.dist(a, b) for a, b in itertools.combinations(light_labs, 2))
    closest_dark, first, second = min((math.dist(labs[i], labs[j]), colours[i], colours[j])
                                      for i, j in itertools.combinations(range(len(colours)), 2))
    assert closest_dark >= max(20.0, 0.9 * closest_light), \
        f"dark mode: {first} and {second} are {closest_dark:.1f} ΔE apart (light mode's closest: {closest_light:.1f})"
    assert not errors, errors


@pytest.mark.parametrize("reader", [1280], indirect=True, ids=lambda w: f"{w}px")
def test_search_ranks_each_chapter_first_for_its_subject_and_quotes_prose(book, reader):
    from urllib.parse import quote

    page, _, errors = reader
    wrong = []
    for stem, query in SUBJECTS.items():
        page.goto(book.base + "search.html?q=" + quote(query), wait_until="load")
        page.wait_for_function("() => (document.querySelector('#search-results p.search-summary') || {}).textContent")
        page.wait_for_function("() => document.querySelectorAll('#search-results ul.search > li p.context').length > 0")
        results = page.evaluate("""() => Array.from(document.querySelectorAll('#search-results ul.search > li'),
            li => [li.querySelector('a').getAttribute('href'),
                   (li.querySelector('p.context') || {}).textContent || ''])""")
        first = results[0][0] if results else "(nothing)"
        if not first.startswith(f"chapters/{stem}.html"):
            wrong.append(f"{query!r}: first result {first}, not chapters/{stem}.html")
        for href, snippet in results[:5]:
            code = re.search(r"\bimport \w+|\bdg\.\w+\(|\bdef \w+\(|print\(|>>>|\\\(|\$\$", snippet)
            if code:
                wrong.append(f"{query!r}: the snippet of {href} quotes code or TeX: {snippet[:100]!r}")
    assert not wrong, "\n".join(wrong)
    assert not errors, errors


@pytest.mark.parametrize("reader", [1280], indirect=True, ids=lambda w: f"{w}px")
def test_search_for_a_chapter_title_lists_the_chapter_once_under_its_title(book, reader):
    """Searched for by its title, a chapter is one result, titled "N. Title" (not "N. Title > Title")."""
    import json
    from urllib.parse import quote

    page, _, errors = reader
    index = (HTML / "searchindex.js").read_text()
    index = json.loads(index[index.index("(") + 1:index.rindex(")")])
    wrong = []
    for stem in SUBJECTS:
        own = index["titles"][index["docnames"].index(f"chapters/{stem}")]
        title = re.sub(r'<span class="section-number">[^<]*</span>', "", own)
        page.goto(book.base + "search.html?q=" + quote(title), wait_until="load")
        page.wait_for_function("() => (document.querySelector('#search-results p.search-summary') || {}).textContent")
        links = page.evaluate("""() => Array.from(document.querySelectorAll('#search-results ul.search > li > a'),
            a => [a.getAttribute('href'), a.textContent])""")
        listed = [text for href, text in links if href == f"chapters/{stem}.html"]
        if len(listed) != 1 or listed[0].count(title) != 1 or " > " in listed[0]:
            wrong.append(f"{title!r}: chapters/{stem}.html listed as {listed}")
    assert not wrong, "\n".join(wrong)
    assert not errors, errors


#: Links whose targets the hover preview shows: (page, link selector, what the panel must hold).
PREVIEWS = [
    ("chapters/batchnorm.html", 'a.reference.internal[href$="glossary.html#term-Batch-normalisation"]', "standardises"),
    ("chapters/batchnorm.html", 'a.reference.internal[href="#fig-batchnorm-transform"]', "img"),
    ("chapters/diagnosing.html", 'a.reference.internal[href="backprop.html#fig-backprop-histograms"]', "img"),
    ("chapters/activations.html", 'a.reference.internal[href="#equation-eq-activations-delta"]', "mjx-container"),
]


@pytest.mark.parametrize("reader", [1280], indirect=True, ids=lambda w: f"{w}px")
def test_hover_previews_of_terms_figures_and_equations(book, reader):
    """Pointing at a glossary term, a figure reference or an equation reference shows its target
    (typeset, images loaded) in a panel described to assistive technology; Escape closes it."""
    page, _, errors = reader
    for chapter, selector, holds in PREVIEWS:
        page.goto(book.base + chapter, wait_until="load")
        link = page.locator(f"article {selector}").first
        link.scroll_into_view_if_needed()
        link.hover()
        panel = page.locator("#book-preview")
        panel.wait_for(state="visible")
        page.wait_for_timeout(500)
        found = page.evaluate("""holds => { const p = document.getElementById("book-preview");
            const images = Array.from(p.querySelectorAll("img"));
            return {text: p.textContent, element: holds === "img" || holds.startsWith("mjx")
                      ? p.querySelectorAll(holds).length : null,
                    loaded: images.every(img => img.complete && img.naturalWidth > 0),
                    rawTex: /\\\\\\(|\\\\\\[/.test(p.textContent)}; }""", holds)
        what = f"{chapter}: preview of {selector}"
        assert found["element"] != 0 if found["element"] is not None else holds in found["text"], f"{what}: {found}"
        assert found["loaded"] and not found["rawTex"], f"{what}: images not loaded or maths not typeset: {found}"
        assert link.get_attribute("aria-describedby") == "book-preview"
        page.keyboard.press("Escape")
        panel.wait_for(state="hidden")
    page.screenshot(path=str(SCREENSHOTS / "interaction-preview.png"))
    assert not errors, errors


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
