import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from deepgrad import plotting  # noqa: E402


def test_style_sets_the_palette():
    plotting.use_style()
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    assert cycle[0] == plotting.PALETTE["blue"] and len(set(cycle)) == len(cycle)


def test_layer_profile_uses_a_log_axis_and_numbers_layers_from_one():
    fig, ax = plotting.figure()
    plotting.layer_profile(ax, [1e-6, 1e-3, 1.0], label="sigmoid", color=plotting.color("sigmoid"))
    assert ax.get_yscale() == "log"
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [1, 2, 3]
    plt.close(fig)


def test_layer_profile_marks_non_finite_values_as_diverged():
    fig, ax = plotting.figure()
    plotting.layer_profile(ax, [1.0, math.inf, math.nan, 0.0], label="run")
    good, bad = ax.get_lines()
    assert list(good.get_xdata()) == [1]
    assert list(bad.get_xdata()) == [2, 3, 4]
    assert good.get_label() == "run (diverged at 3 layers)"
    plt.close(fig)


def test_layer_profile_all_diverged_still_labelled():
    fig, ax = plotting.figure()
    plotting.layer_profile(ax, [math.nan, math.nan], label="run")
    (bad,) = ax.get_lines()
    assert bad.get_label() == "run (diverged at 2 layers)"
    plt.close(fig)


def test_unknown_colour_name():
    with pytest.raises(ValueError, match="name must be one of .*'relu'.*; got 'rleu'"):
        plotting.color("rleu")


def test_draw_graph_draws_every_node_and_edge():
    fig, ax = plotting.figure()
    nodes = {"x": (0, 0, "$x$", "value"), "w": (1, 1, "$w$", "param"), "L": (2, 0, "$L$", "loss")}
    plotting.draw_graph(ax, nodes, [("x", "L", "", "forward"), ("w", "L", "", "forward"),
                                    ("L", "x", r"$\partial L/\partial x$", "backward")])
    assert [t.get_text() for t in ax.texts if t.get_text().startswith("$")] == [
        "$x$", "$w$", "$L$", r"$\partial L/\partial x$"]
    assert sum(1 for t in ax.texts if getattr(t, "arrow_patch", None) is not None) == 3
    assert not ax.axison
    plt.close(fig)


def test_draw_graph_rejects_unknown_nodes_kinds_and_styles():
    fig, ax = plotting.figure()
    with pytest.raises(ValueError, match="kind of node 'x' must be one of 'value', 'param', 'loss', 'op'"):
        plotting.draw_graph(ax, {"x": (0, 0, "x", "tensor")}, [])
    with pytest.raises(ValueError, match="edge end must be one of 'x'; got 'y'"):
        plotting.draw_graph(ax, {"x": (0, 0, "x", "value")}, [("x", "y", "", "forward")])
    with pytest.raises(ValueError, match="style of edge x->x must be one of 'forward', 'backward'"):
        plotting.draw_graph(ax, {"x": (0, 0, "x", "value")}, [("x", "x", "", "sideways")])
    plt.close(fig)


@pytest.mark.parametrize("value, digits, text", [
    (8.93e-8, 2, "8.9 × 10⁻⁸"), (-8.93e-8, 2, "−8.9 × 10⁻⁸"), (1e-12, 2, "10⁻¹²"), (6.6e-24, 1, "7 × 10⁻²⁴"),
    (0.1612, 2, "0.16"), (512.0, 3, "512"), (2.0, 2, "2.0"), (12345.0, 2, "1.2 × 10⁴"), (0.0, 2, "0.0"),
    (253.0, 2, "250"), (25.3, 2, "25"), (9.99, 2, "10"), (-253.0, 1, "-300"), (999.7, 3, "1000"),
])
def test_scientific(value, digits, text):
    assert plotting.scientific(value, digits) == text


def test_scientific_non_finite_and_bad_digits():
    assert plotting.scientific(math.inf) == "inf" and plotting.scientific(math.nan) == "nan"
    with pytest.raises(ValueError, match="digits must be an int >= 1, got 0"):
        plotting.scientific(1.0, digits=0)


def test_no_series_is_drawn_in_yellow_on_white():
    """Okabe-Ito yellow (#F0E442) is nearly invisible on a white page: no role colour may use it."""
    from deepgrad.plotting import _ROLE_COLORS

    assert "#F0E442" not in {c.upper() for c in _ROLE_COLORS.values()}


def test_glue_figure_outside_the_book_shows_the_figure_once_without_myst_nb(monkeypatch):
    import sys

    import IPython
    import IPython.display

    monkeypatch.delenv("DEEPGRAD_BOOK", raising=False)
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # `import myst_nb` raises ImportError
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    fig, _ = plt.subplots()
    plotting.glue_figure("fig-x", fig)
    assert len(shown) == 1  # shown once, as the book shows it: rendered at twice its displayed size
    assert isinstance(shown[0], plotting.RenderedFigure) and shown[0].png.startswith(b"\x89PNG")
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend does not draw it again


def test_glue_figure_in_the_book_glues_it_hidden_and_closes_it(glued):
    fig, _ = plt.subplots()
    plotting.glue_figure("fig-x", fig)
    [(name, value, display)] = glued
    assert (name, display) == ("fig-x", False) and isinstance(value, plotting.RenderedFigure)
    assert not plt.fignum_exists(fig.number)
