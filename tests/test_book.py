import math
import sys

import numpy as np
import pytest

import deepgrad as dg
from deepgrad import book


def test_moved_functions_are_the_same_objects_at_their_old_homes():
    from deepgrad import plotting, repro
    assert repro.significant is book.significant is dg.significant
    assert plotting.scientific is book.scientific is dg.scientific
    assert dg.glue is book.glue


@pytest.mark.parametrize("value, digits, expected", [
    (0.123456, 3, 0.123), (123456.0, 2, 120000.0), (-9.876e-9, 2, -9.9e-9), (0.0, 3, 0.0), (2.5, 1, 2.0),
    (np.float32(0.1), 4, 0.1), (7, 4, 7.0),
])
def test_significant(value, digits, expected):
    assert book.significant(value, digits) == expected
    assert type(book.significant(value, digits)) is float


@pytest.mark.parametrize("value, digits, text", [
    (8.94e-8, 2, "8.9 × 10⁻⁸"), (1e-7, 2, "10⁻⁷"), (0.1612, 2, "0.16"), (512.0, 3, "512"), (253.0, 2, "250"),
    (-3.2e5, 2, "−3.2 × 10⁵"), (0.0, 2, "0.0"), (math.inf, 2, "inf"),
])
def test_scientific(value, digits, text):
    assert book.scientific(value, digits) == text


def test_glue_rounds_floats_like_the_old_pattern(glued):
    """dg.glue(name, x, d) stores exactly what glue(name, dg.significant(x, d), display=False) stored."""
    rng = np.random.default_rng(0)
    for x in rng.lognormal(0, 5, size=200).tolist() + [-0.00012345678, 93.33333333333333]:
        for digits in (1, 2, 3, 4):
            glued.clear()
            book.glue("v", x, digits)
            ((name, value, display),) = glued
            assert (name, display) == ("v", False)
            assert type(value) is float and repr(value) == repr(float(f"{x:.{digits - 1}e}"))


def test_glue_default_digits_is_four(glued):
    book.glue("v", 2.302585092994046)
    assert glued == [("v", 2.303, False)]


def test_glue_digits_none_stores_the_float_unrounded(glued):
    book.glue("v", 100 / 3, None)
    assert repr(glued[0][1]) == repr(100 / 3)


def test_glue_reads_one_element_tensors_as_floats(glued):
    import torch
    book.glue("t", torch.tensor(0.123456), 2)
    book.glue("s", torch.tensor([8.94e-8]), 2, scientific=True)
    assert glued[0][1] == 0.12 and type(glued[0][1]) is float
    assert glued[1][1].data == "8.9 × 10⁻⁸"


def test_glue_keeps_ints_as_they_are(glued):
    book.glue("steps", 12345678, 2)
    book.glue("count", np.int64(7))
    assert glued[0][1] == 12345678 and type(glued[0][1]) is int
    assert type(glued[1][1]) is np.int64 and repr(glued[1][1]) == repr(np.int64(7))


def test_glue_stores_text_and_scientific_numbers_as_markdown(glued):
    from IPython.display import Markdown
    book.glue("best", "`lr`")
    book.glue("tiny", 8.94e-8, 2, scientific=True)
    book.glue("huge", 1e12, 1, scientific=True)  # an exact power of ten is written as one
    kinds = [type(v) for _, v, _ in glued]
    assert kinds == [Markdown] * 3
    assert [v.data for _, v, _ in glued] == ["`lr`", "8.9 × 10⁻⁸", "10¹²"]
    # the same representation as the old dg.plotting.glue_text(name, sci(x, 2))
    assert glued[1][1]._repr_markdown_() == Markdown(dg.plotting.scientific(8.94e-8, 2))._repr_markdown_()


def test_glue_text_in_plotting_still_works(glued):
    dg.plotting.glue_text("t", "2 × 10⁻⁷")
    assert glued[0][0] == "t" and glued[0][1].data == "2 × 10⁻⁷" and glued[0][2] is False


def test_glue_keeps_non_finite_values(glued):
    book.glue("nan", math.nan, 2)
    book.glue("inf", math.inf, 2, scientific=True)
    assert math.isnan(glued[0][1]) and glued[1][1].data == "inf"


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((1, 0.5), {}, TypeError, "name must be a str"),
    (("", 0.5), {}, ValueError, "name must be a non-empty str"),
    (("v", [0.5, 1.5]), {}, TypeError, "value must be a real number, a one-element tensor or a str, got list"),
    (("v", None), {}, TypeError, "value must be a real number, a one-element tensor or a str, got NoneType"),
    (("v", "text"), {"scientific": True}, TypeError, "scientific=True needs a number"),
    (("v", 0.5, 0), {}, ValueError, "digits must be an int >= 1, got 0"),
    (("v", 0.5, 2.0), {}, TypeError, "digits must be an int >= 1"),
])
def test_glue_bad_arguments(glued, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        book.glue(*args, **kwargs)
    assert glued == []


def test_glue_against_the_real_myst_nb(monkeypatch):
    """With MyST-NB itself, for the book: the displayed record carries the rounded number as text/plain."""
    pytest.importorskip("myst_nb")
    monkeypatch.setenv("DEEPGRAD_BOOK", "1")
    from unittest import mock
    # MyST-NB holds IPython's display under its own name (imported when its module first loads)
    with mock.patch("myst_nb.ext.glue.ipy_display") as display:
        book.glue("real", 0.123456, 2)
    ((data,), kwargs) = display.call_args
    assert data["application/papermill.record/text/plain"] == "0.12"
    assert kwargs["metadata"]["scrapbook"]["name"] == "real"


def test_book_imports_neither_matplotlib_nor_myst_nb_at_module_level():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(book))
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "math", "numbers", "os", "typing", "deepgrad._checks"}, imported


def test_activations_no_longer_imports_repro_to_round():
    import inspect

    from deepgrad import activations
    assert "deepgrad.repro" not in inspect.getsource(activations)


# --- outside a build of the book (DEEPGRAD_BOOK unset): glue shows the value, MyST-NB not needed --------

@pytest.fixture
def jupyter(monkeypatch):
    """A Jupyter kernel without MyST-NB and outside the book: what IPython's display receives."""
    import IPython
    import IPython.display

    monkeypatch.delenv("DEEPGRAD_BOOK", raising=False)
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # `import myst_nb` raises ImportError
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    return shown


@pytest.mark.parametrize("flag, expected", [(None, False), ("", False), ("0", False), ("1", True)])
def test_in_book_reads_the_environment(monkeypatch, flag, expected):
    if flag is None:
        monkeypatch.delenv("DEEPGRAD_BOOK", raising=False)
    else:
        monkeypatch.setenv("DEEPGRAD_BOOK", flag)
    assert book.in_book() is expected


def test_in_book_rejects_other_values(monkeypatch):
    monkeypatch.setenv("DEEPGRAD_BOOK", "yes")
    with pytest.raises(ValueError, match="DEEPGRAD_BOOK must be '1'.*got 'yes'"):
        book.in_book()


def test_glue_outside_the_book_shows_the_key_and_the_value_as_markdown(jupyter):
    book.glue("jupyter-gap", 3.1e-16, 1, scientific=True)
    book.glue("steps", 120)
    book.glue("loss", 2.302585092994046)
    book.glue("best", "`lr`")
    assert jupyter == [
        ({"text/markdown": "`jupyter-gap` = 3 × 10⁻¹⁶", "text/plain": "jupyter-gap = 3 × 10⁻¹⁶"}, True),
        ({"text/markdown": "`steps` = 120", "text/plain": "steps = 120"}, True),
        ({"text/markdown": "`loss` = 2.303", "text/plain": "loss = 2.303"}, True),
        ({"text/markdown": "`best` = `lr`", "text/plain": "best = `lr`"}, True),
    ]


def test_glue_outside_the_book_still_checks_its_arguments(jupyter):
    with pytest.raises(TypeError, match="value must be a real number"):
        book.glue("v", [1, 2])
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        book.glue("", 1.0)
    assert jupyter == []


def test_glue_in_a_plain_python_process_prints_a_line(monkeypatch, capsys):
    monkeypatch.delenv("DEEPGRAD_BOOK", raising=False)
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    book.glue("ratio", 0.123456, 2)
    assert capsys.readouterr().out == "ratio = 0.12\n"


def test_glue_in_the_book_shows_nothing_and_needs_myst_nb(monkeypatch):
    monkeypatch.setenv("DEEPGRAD_BOOK", "1")
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    with pytest.raises(ImportError):
        book.glue("v", 1.0)
