"""Small HTML tables for rich notebook outputs (``_repr_html_``).

Jupyter and the book show an object's ``_repr_html_`` where they can and its text (``__repr__`` or
``_repr_pretty_``) elsewhere, so a report prints as a fixed-width table in a terminal and renders as
an HTML table, which reflows on a phone, in the book. The tables carry the class ``dg-table``
(styled by the book's ``_static/report-tables.css``) inside a scrolling wrapper, so that a wide
table scrolls by itself rather than widening the page (``_static/report-tables.js`` makes each
wrapper a focusable, labelled region, so that the scrolling works from the keyboard too).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["html_table"]


def _cell(tag: str, value: object, attrs: str = "") -> str:
    return f"<{tag}{attrs}>{html.escape(str(value))}</{tag}>"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, caption: str | None = None,
               titles: Sequence[str | None] | None = None, row_classes: Sequence[str | None] | None = None,
               numeric: Sequence[bool] | None = None, after: Sequence[str] = ()) -> str:
    """An escaped HTML table: one header row, then ``rows`` (every cell shown with ``str``).

    ``titles`` gives each column header a tooltip (its meaning); ``numeric`` right-aligns columns;
    ``row_classes`` adds a class per row (``None``: none); ``after`` are paragraphs of text shown
    below the table. Raises ``ValueError`` if a row's length differs from the headers'.
    """
    n = len(headers)
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"rows[{i}] has {len(row)} cells, headers has {n}")
    titles = titles or [None] * n
    numeric = numeric or [False] * n
    row_classes = row_classes or [None] * len(rows)
    head = "".join(_cell("th", h, (f' title="{html.escape(t)}"' if t else "") + ' scope="col"')
                   for h, t in zip(headers, titles, strict=True))
    body = []
    for row, cls in zip(rows, row_classes, strict=True):
        cells = "".join(_cell("td", v, ' class="dg-num"' if num else "")
                        for v, num in zip(row, numeric, strict=True))
        body.append(f'<tr class="{html.escape(cls)}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    cap = _cell("caption", caption) if caption else ""
    notes = "".join(_cell("p", text) for text in after)
    return (f'<div class="dg-table-wrap"><table class="dg-table">{cap}<thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{notes}')
