"""The book's PDF edition: the single-page HTML build, printed by Chromium.

    python tools/pdf.py [SINGLEHTML_DIR] [OUTPUT_PDF]      (defaults: _build/singlehtml, _build/pdf/book.pdf)

``make pdf`` builds the single-page HTML (``jupyter-book build . --builder singlehtml``, which reuses
the execution cache: no chapter runs again) and then runs this script, which

1. rewrites the page for print (``print.html`` beside ``index.html``): each chapter starts on a new
   page, and every exercise's solution moves to an appendix, "Solutions to the exercises", with a
   link from the exercise to its solution and back (solutions are collapsed on the web; on paper
   they would otherwise give the answer away under the question);
2. opens it in headless Chromium (Playwright driving Debian's ``chromium`` or the browser named by
   ``BOOK_CHROMIUM``), waits until MathJax has typeset every equation and every image has loaded,
   and prints it with the print style sheet (``_static/print.css``: no site chrome, long code lines
   wrapped rather than clipped, cells and figures kept whole) to A4 pages numbered in the footer,
   with the chapters as the PDF's outline (bookmarks).

The HTML build (``_ext/book_pdf.py``) copies the PDF into the site and links it from every page's
download menu when it exists.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Waits for MathJax and the fonts, and makes lazy images load (the browser tests' own settling).
SETTLE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  for (const img of document.images) { img.loading = "eager"; }
  await Promise.all(Array.from(document.images, img => img.decode().catch(() => null)));
  await document.fonts.ready;
}"""
FOOTER = ('<div style="font-size:8px;width:100%;text-align:center;color:#555;">'
          '<span class="pageNumber"></span> / <span class="totalPages"></span></div>')


def _root_document() -> str:
    import yaml

    return yaml.safe_load((ROOT / "_toc.yml").read_text())["root"]


def find_chromium() -> str:
    """``BOOK_CHROMIUM``, else the first Chromium-based browser on the PATH."""
    if os.environ.get("BOOK_CHROMIUM"):
        return os.environ["BOOK_CHROMIUM"]
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: install Debian's `chromium` or set BOOK_CHROMIUM")


def for_print(page: str) -> str:
    """The single-page book rewritten for paper: chapters on new pages, solutions in an appendix."""
    soup = BeautifulSoup(page, "html.parser")
    article = soup.select_one("article.bd-article") or soup.body
    # The single-page build nests every chapter in the root document's table of contents, so the
    # rest of the front page would follow the last chapter: the chapters move after the front page.
    front = article.find("section")
    chapters = article.select("div.toctree-wrapper > section")
    for section in reversed(chapters):
        front.insert_after(section.extract())
    for section in [front, *chapters]:
        section["class"] = [*section.get("class", []), "dg-print-chapter"]
    solutions = article.select("div.solution")
    if solutions:
        appendix = soup.new_tag("section", attrs={"id": "dg-solutions", "class": "dg-print-chapter"})
        heading = soup.new_tag("h1")
        heading.string = "Solutions to the exercises"
        appendix.append(heading)
        for solution in solutions:
            ident = solution.get("id") or f"dg-solution-{len(appendix)}"
            solution["id"] = ident
            # not collapsible on paper: sphinx-togglebutton folds admonitions of class "dropdown"
            solution["class"] = [c for c in solution.get("class", []) if c not in ("dropdown", "toggle")]
            title = solution.select_one("p.admonition-title")
            pointer = soup.new_tag("p", attrs={"class": "dg-solution-pointer"})
            link = soup.new_tag("a", href=f"#{ident}")
            link.string = (title.get_text(" ", strip=True) if title else "Solution") + ": in the appendix"
            pointer.append(link)
            solution.replace_with(pointer)
            appendix.append(solution)
        article.append(appendix)
    return str(soup)


def print_pdf(html: Path, out: Path, timeout_s: float = 300) -> None:
    """Print ``html`` to ``out`` with headless Chromium once its equations and images are ready."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            # nothing but the book's own files: the edition is built offline
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else route.abort())
            page.goto(html.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            page.evaluate(SETTLE)
            page.emulate_media(media="print")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(path=str(out), format="A4", print_background=True, outline=True, tagged=True,
                     display_header_footer=True, header_template="<span></span>", footer_template=FOOTER,
                     margin={"top": "16mm", "bottom": "16mm", "left": "16mm", "right": "16mm"})
        finally:
            browser.close()


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else ROOT / "_build" / "singlehtml"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "_build" / "pdf" / "book.pdf"
    index = source / f"{_root_document()}.html"  # index.html only redirects to it
    if not index.exists():
        raise SystemExit(f"{index} not found: build the single-page book first "
                         "(jupyter-book build . --builder singlehtml)")
    start = time.perf_counter()
    printable = source / "print.html"
    printable.write_text(for_print(index.read_text(encoding="utf-8")), encoding="utf-8")
    print_pdf(printable.resolve(), out)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
