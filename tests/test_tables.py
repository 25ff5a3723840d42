"""deepgrad.tables and the rich outputs that use it: GradientReport and ablation.Recipe as HTML tables."""

from __future__ import annotations

import html.parser

import pytest
import torch
from IPython.lib.pretty import pretty
from torch import nn

import deepgrad as dg
from deepgrad import ablation, tables


class _Cells(html.parser.HTMLParser):
    """The text of every <th> and <td>, row by row, parsed independently of the writer."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _cells(markup: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(markup)
    return parser.rows


def test_html_table_escapes_and_keeps_every_cell():
    markup = tables.html_table(["a", "b<"], [[1, "<x>"], ["&", None]], caption="c", numeric=[True, False])
    assert _cells(markup) == [["a", "b<"], ["1", "<x>"], ["&", "None"]]
    assert "<x>" not in markup and "&lt;x&gt;" in markup
    assert markup.count('class="dg-num"') == 2 and "<caption>c</caption>" in markup


def test_html_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="rows\\[1\\]"):
        tables.html_table(["a", "b"], [[1, 2], [3]])


def _report():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with dg.diagnostics.GradientReport(model, every=1) as report:
        for _ in range(3):
            model.zero_grad()
            model(torch.randn(5, 4)).sum().backward()
    return report


def test_report_html_has_the_text_tables_cells():
    report = _report()
    text_rows = [line.split() for line in report.table().splitlines()]
    html_rows = _cells(report._repr_html_())
    assert [h for h, _ in report.COLUMNS] == html_rows[0]
    assert [row for row in html_rows[1:]] == text_rows[1:]  # same numbers, same order
    assert f"verdict: {report.verdict.headline}" in report._repr_html_()
    # the reference row (the last hidden layer) is marked
    assert '<tr class="dg-reference"><td class="dg-num">2</td>' in report._repr_html_()


def test_report_text_in_ipython_is_the_printed_report():
    report = _report()
    assert pretty(report) == str(report)


def test_recipe_renders_as_a_table_of_its_choices():
    recipe = ablation.Recipe(lr=0.5)
    rows = _cells(recipe._repr_html_())
    assert rows[0] == ["choice", "value"]
    assert dict(rows[1:])["lr"] == "0.5" and dict(rows[1:])["activation"] == "'sigmoid'"
    assert pretty(recipe).replace("\n", " ") == repr(recipe)
