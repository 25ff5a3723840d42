"""The book's Sphinx extensions for the HTML (``_ext/book_html.py``, ``_ext/book_bibliography.py``)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pybtex.database import Entry, Person

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))

import book_bibliography  # noqa: E402
import book_html  # noqa: E402


@pytest.mark.parametrize(("url", "real"), [
    ("https://github.com/OWNER/REPO", False), ("", False), (None, False), ("   ", False),
    ("https://github.com/deepgrad/book", True),
])
def test_only_a_real_repository_address_counts(url, real):
    assert book_html.has_repository(url) is real


def _config(url: str) -> SimpleNamespace:
    options = {"repository_url": url, "use_repository_button": True, "use_edit_page_button": True,
               "use_issues_button": True, "launch_buttons": {"binderhub_url": "https://mybinder.org",
                                                             "colab_url": "https://colab.research.google.com"}}
    return SimpleNamespace(html_theme_options=options, html_static_path=[])


def test_the_placeholder_address_leaves_out_every_button_that_would_lead_to_it():
    config = _config("https://github.com/OWNER/REPO")
    book_html._theme_options(None, config)
    options = config.html_theme_options
    assert not any(options[b] for b in ("use_repository_button", "use_edit_page_button", "use_issues_button"))
    assert options["launch_buttons"] == {} and options["repository_url"] == ""
    assert options["navbar_persistent"] == []  # no second header bar (and no second sidebar buttons)


def test_a_real_address_keeps_the_buttons():
    config = _config("https://github.com/deepgrad/book")
    book_html._theme_options(None, config)
    options = config.html_theme_options
    assert options["use_repository_button"] and options["use_edit_page_button"] and options["use_issues_button"]
    assert options["launch_buttons"]["colab_url"] and options["repository_url"].endswith("deepgrad/book")


def _entry(key: str, authors: list[str], year: str = "2010") -> Entry:
    entry = Entry("article", fields={"title": "A title", "year": year})
    entry.key = key
    entry.persons["author"] = [Person(a) for a in authors]
    return entry


def test_bibliography_labels_read_like_the_citations():
    entries = [
        _entry("a", ["Glorot, Xavier", "Bengio, Yoshua"]),
        _entry("b", ["He, Kaiming", "Zhang, Xiangyu", "Ren, Shaoqing"], "2015"),
        _entry("c", ["He, Kaiming", "Zhang, Xiangyu", "Ren, Shaoqing", "Sun, Jian"], "2015"),
        _entry("d", ["Hochreiter, Sepp"], "1991"),
        _entry("e", ["von Neumann, John"], "1945"),
        _entry("f", ["Ioffe, Sergey", "Szeged{\\'y}, Christian"], "2015"),
    ]
    labels = list(book_bibliography.AuthorYearLabels().format_labels(entries))
    assert labels == ["Glorot and Bengio, 2010", "He et al., 2015a", "He et al., 2015b", "Hochreiter, 1991",
                      "von Neumann, 1945", "Ioffe and Szegedý, 2015"]


def test_citations_carry_the_letter_of_their_label():
    """Two works of the same authors and year are cited as 2016a and 2016b, as they are labelled."""
    labelled = SimpleNamespace(label="He et al., 2016a")
    assert str(book_bibliography.labelled_year.format_data({"formatted_entry": labelled})) == "2016a"
    single = {"formatted_entry": SimpleNamespace(label="Hochreiter, 1991"),
              "entry": _entry("d", ["Hochreiter, S"], "1991")}
    assert str(book_bibliography.labelled_year.format_data(single)) == "1991"
