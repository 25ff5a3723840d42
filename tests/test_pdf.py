"""The PDF edition (``make pdf``, tools/pdf.py): the whole book, its figures, its solutions appendix.

Reads ``_build/pdf/book.pdf`` (or ``BOOK_PDF``). Without the file the tests are skipped, unless
``BOOK_PDF_REQUIRED`` is set (``make pdf`` and the publishing workflow set it), where they fail.
The single-page build's ``print.html`` rewriting is tested on a small page without a browser.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PDF = Path(os.environ.get("BOOK_PDF", ROOT / "_build" / "pdf" / "book.pdf"))
REQUIRED = bool(os.environ.get("BOOK_PDF_REQUIRED"))


def _load_tool():
    spec = importlib.util.spec_from_file_location("book_pdf_tool", ROOT / "tools" / "pdf.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [entry["file"] for entry in part.get("chapters", [])]
    return files


def _title(stem: str) -> str:
    for line in (ROOT / f"{stem}.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise AssertionError(f"{stem}.md has no title")


def _figures() -> int:
    """Figures the chapters draw: every glued figure and every figure directive."""
    pattern = re.compile(r"^```\{(glue:figure|figure)\}", re.M)
    return sum(len(pattern.findall((ROOT / f"{stem}.md").read_text(encoding="utf-8"))) for stem in _toc_files())


@functools.cache
def _reader():
    if not PDF.exists():
        if REQUIRED:
            pytest.fail(f"{PDF} was not built (make pdf)")
        pytest.skip(f"{PDF} not built (make pdf)")
    if REQUIRED:
        pypdf = __import__("pypdf")
    else:
        pypdf = pytest.importorskip("pypdf")
    return pypdf.PdfReader(str(PDF))


@functools.cache
def _text() -> str:
    """The PDF's text without any white space (pypdf drops or adds spaces between words)."""
    return _squeeze("".join(page.extract_text() or "" for page in _reader().pages))


def _squeeze(text: str) -> str:
    """Without white space, and ligatures (ﬁ) spelt out."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _image_xobjects(reader) -> set:
    """Distinct image XObjects drawn on the pages (by object number)."""
    found = set()
    for page in reader.pages:
        resources = page.get("/Resources")
        stack = [resources.get_object()] if resources else []
        while stack:
            res = stack.pop()
            xobjects = res.get("/XObject")
            if not xobjects:
                continue
            for ref in xobjects.get_object().values():
                obj = ref.get_object()
                if obj.get("/Subtype") == "/Image":
                    found.add(getattr(ref, "idnum", id(obj)))
                elif obj.get("/Subtype") == "/Form" and obj.get("/Resources"):
                    stack.append(obj["/Resources"].get_object())
    return found


@pytest.mark.built_pdf
def test_page_count_is_a_book():
    pages = len(_reader().pages)
    chapters = len(_toc_files())
    # at least a few pages per chapter, and no runaway layout (a figure per page, say)
    assert 8 * chapters <= pages <= 80 * chapters, pages


@pytest.mark.built_pdf
def test_every_chapter_is_present():
    text = _text()
    missing = [stem for stem in _toc_files() if _squeeze(_title(stem)) not in text]
    assert not missing, f"chapters whose title is not in the PDF's text: {missing}"


@pytest.mark.built_pdf
def test_figures_are_embedded():
    images = _image_xobjects(_reader())
    assert len(images) >= _figures(), (len(images), _figures())


@pytest.mark.built_pdf
def test_solutions_are_in_the_appendix():
    text = _text()
    assert "Solutionstotheexercises" in text
    appendix = text[text.rindex("Solutionstotheexercises"):]
    assert appendix.count("SolutiontoExercise") >= 10


def _titles(outline) -> list[str]:
    return [t for entry in outline for t in (_titles(entry) if isinstance(entry, list) else [entry.title])]


@pytest.mark.built_pdf
def test_the_pdf_has_bookmarks():
    # a chapter's bookmark carries its number ("1. Backpropagation: ..."), as the sidebar does
    titles = [_squeeze(re.sub(r"^\d+\.\s+", "", t)) for t in _titles(_reader().outline)]
    assert all(_squeeze(_title(stem)) in titles for stem in _toc_files()[1:]), titles


def test_for_print_moves_solutions_to_an_appendix():
    tool = _load_tool()
    page = """<html><body><article class="bd-article"><section id="intro"><h1>Intro</h1>
      <div class="toctree-wrapper compound">
      <section id="a"><h3>A</h3>
        <div class="exercise admonition" id="ex-1"><p class="admonition-title">Exercise 1</p><p>Q?</p></div>
        <div class="solution dropdown admonition" id="sol-1"><p class="admonition-title">Solution to Exercise 1</p>
          <p>Answer.</p></div>
        <p>After.</p></section>
      <section id="b"><h3>B</h3></section></div><p>Outro</p></section></article></body></html>"""
    out = tool.for_print(page)
    assert out.index("Q?") < out.index("After.") < out.index("Solutions to the exercises") < out.index("Answer.")
    assert out.index("Intro") < out.index("Outro") < out.index("Q?")  # the chapters follow the whole front page
    assert 'href="#sol-1"' in out and "dropdown" not in out
    assert out.count("dg-print-chapter") == 4  # the front page, two chapters and the appendix: new pages
