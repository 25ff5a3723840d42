"""Sphinx extension: bibliography labels in the author-year form of the book's citations.

The chapters cite author-year (``bibtex_reference_style: author_year``: "Glorot and Bengio (2010)"),
but pybtex's ``plain`` style labels the entries of the bibliography [1], [2], ... so the reader could
not match a citation to its entry by eye. The style ``book`` is ``plain`` (same formatting and order)
with labels that read like the citations: "Glorot and Bengio, 2010", "He et al., 2015"; two works of
the same authors and year get "2015a", "2015b", and so do their citations in the text ("He et al.
(2016a)"): sphinxcontrib-bibtex's author-year citations print the entry's ``year`` field, so its
``year`` node, in the two modules whose citation templates use it, is replaced by one that reads the
year, with its letter, from the entry's label.
"""

from __future__ import annotations

import re
from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import node
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.style import template
from sphinxcontrib.bibtex.style.referencing import basic_author_year, extra_year

_LABEL_YEAR = re.compile(r", (?P<year>\d{4}[a-z])$")


def _surname(person) -> str:
    """A person's last name(s) as printed, without BibTeX's braces."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def cited_authors(entry) -> str:
    """``Surname``, ``A and B`` or ``A et al.`` (editors when there are no authors), as citations name them.

    Also what the learner notebooks (tools/learner.py) write for a citation.
    """
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_surname(p) for p in people]
    if not names:
        return entry.fields.get("organization") or entry.fields.get("title", entry.key)
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


def author_year(entry) -> str:
    """``Surname, Year``, ``A and B, Year`` or ``A et al., Year``: :func:`cited_authors` and the year."""
    return f"{cited_authors(entry)}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    """Author-year labels, with a, b, ... for works of the same authors and year."""

    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        total, seen = Counter(labels), Counter()
        for label in labels:
            if total[label] == 1:
                yield label
            else:
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label]]
                seen[label] += 1


@node
def labelled_year(children, data) -> Text:
    """The year of a citation as its entry's label gives it ("2016a"), else the ``year`` field."""
    assert not children
    entry = data.get("formatted_entry")
    found = _LABEL_YEAR.search(str(entry.label)) if entry is not None else None
    return Text(found.group("year")) if found else template.year.format_data(data)


class BookStyle(PlainStyle):
    """pybtex's ``plain`` formatting and sorting, with :class:`AuthorYearLabels`."""

    default_label_style = "book-author-year"


def setup(app: Sphinx):
    register_plugin("pybtex.style.labels", "book-author-year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "book", BookStyle)
    basic_author_year.year = extra_year.year = labelled_year
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
