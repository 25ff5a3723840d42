"""One house style for every figure in the book, and the helpers chapters share.

- :func:`use_style` sets Matplotlib's defaults: sizes for a book column, light grids, no top/right
  spines and the colour-blind-safe Okabe–Ito palette (Okabe & Ito, 2008).
- :func:`color` gives each activation (and a few roles) a fixed colour across chapters.
- :func:`layer_profile` draws one per-layer quantity (a gradient norm, say) on a log axis, marking
  non-finite values as diverged instead of failing.
- :func:`draw_graph` draws a small computational graph (nodes in boxes, forward and backward arrows).
- :func:`glue_figure` hands a figure to MyST-NB's ``glue`` for a numbered, captioned ``{glue:figure}``
  (for the book), or shows it where it was made (anywhere else: see :func:`deepgrad.book.in_book`),
  rendered by :func:`render` as a PNG at twice its displayed size, with its measurements attached.

The width scheme: a figure is :data:`WIDTHS` ``["full"]`` (the text column, shown at
:data:`COLUMN_PX` CSS pixels) or ``["narrow"]`` wide, in inches; one inch is shown as
``COLUMN_PX / WIDTHS["full"]`` CSS pixels, so a font of ``s`` points is ``s * PX_PER_PT`` pixels on the
page. :data:`MIN_FONT_PX` is the smallest text the book allows at that size.

Numbers and text are glued with :func:`deepgrad.book.glue`; ``scientific`` and ``glue_text`` are
still importable from here (from :mod:`deepgrad.book`, where they live now).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from deepgrad._checks import one_of
from deepgrad.book import glue, in_book, scientific  # noqa: F401  (scientific is re-exported: it lived here before)

#: The Okabe–Ito palette: distinguishable under the common colour-vision deficiencies.
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",  # Okabe-Ito yellow: nearly invisible on white, so no series uses it
    "gold": "#8C6D00",    # a dark gold (contrast 4.9:1 on white) in yellow's place
    "black": "#000000",
}

_ROLE_COLORS = {
    "sigmoid": PALETTE["vermillion"],
    "tanh": PALETTE["orange"],
    "relu": PALETTE["blue"],
    "leaky_relu": PALETTE["sky"],
    "elu": PALETTE["green"],
    "selu": PALETTE["purple"],
    "silu": PALETTE["black"],
    "gelu": PALETTE["gold"],
    "identity": "#777777",
    "healthy": PALETTE["green"],
    "sick": PALETTE["vermillion"],
    "reference": "#777777",
}

#: The book's figure widths, in inches: the text column, and two thirds of it for a single small panel.
WIDTHS = {"full": 7.5, "narrow": 5.0}
#: Width of a full-width book figure, in inches.
FULL_WIDTH = WIDTHS["full"]
#: The width of the text column on a desktop screen, in CSS pixels: a full-width figure is shown this wide.
COLUMN_PX = 672
#: CSS pixels per point of font size at the displayed size (672 px / 7.5 in / 72 pt per inch).
PX_PER_PT = COLUMN_PX / FULL_WIDTH / 72
#: Pixel density of the stored PNGs relative to their displayed size (2: crisp on high-density screens).
OVERSAMPLE = 2
#: The smallest text allowed in a figure, in CSS pixels at its displayed size.
MIN_FONT_PX = 9.0
#: Markers that pair with the colour cycle, so that series differ without colour too, and line styles
#: that :func:`style` pairs with them.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1.5)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1.5)))
_CYCLE = ("blue", "orange", "green", "vermillion", "sky", "purple", "black")


def use_style() -> None:
    """Apply the book's Matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update({
        "figure.figsize": (FULL_WIDTH, 3.4),
        "figure.dpi": 100,
        "savefig.dpi": OVERSAMPLE * COLUMN_PX / FULL_WIDTH,
        "savefig.facecolor": "white",  # opaque: the page's dark mode may invert figures
        "figure.facecolor": "white",
        "figure.constrained_layout.use": True,
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "xtick.labelsize": 9.5,
        "ytick.labelsize": 9.5,
        "legend.fontsize": 9,
        "legend.frameon": True,  # legends that must sit near data get a light backing, not a box
        "legend.framealpha": 0.85,
        "legend.edgecolor": "none",
        "legend.handlelength": 2.6,  # long enough to show each line style
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.8,
        "lines.markersize": 5,
        # each colour with its own marker; lines stay solid unless a chapter gives them a meaning
        "axes.prop_cycle": mpl.cycler(color=[PALETTE[k] for k in _CYCLE]) + mpl.cycler(marker=MARKERS),
        "image.cmap": "viridis",
    })


def color(name: str) -> str:
    """The fixed colour of an activation or role (``"healthy"``, ``"sick"``, ``"reference"``)."""
    one_of("name", name, _ROLE_COLORS)
    return _ROLE_COLORS[name]


def style(name: str) -> dict:
    """Colour, marker and line style of an activation or role, for ``ax.plot(..., **style(name))``.

    Activations that sit side by side in many figures (sigmoid and tanh above all, which are close
    for deuteranopes) differ in marker and dashes as well as in colour.
    """
    one_of("name", name, _ROLE_COLORS)
    index = list(_ROLE_COLORS).index(name)
    return dict(color=_ROLE_COLORS[name], marker=MARKERS[index % len(MARKERS)],
                linestyle=LINESTYLES[index % len(LINESTYLES)])


def figure(ncols: int = 1, nrows: int = 1, *, height: float = 3.4, width: float | str = "full",
           **kwargs) -> tuple[Figure, Axes | Sequence[Axes]]:
    """A new figure in the book's size; returns ``(fig, axes)`` like ``plt.subplots``.

    ``width`` is a key of :data:`WIDTHS` (``"full"`` or ``"narrow"``); a number of inches is
    accepted only when it is one of those widths.
    """
    if isinstance(width, str):
        one_of("width", width, WIDTHS)
        width = WIDTHS[width]
    elif width not in WIDTHS.values():
        raise ValueError(f"width must be one of {sorted(WIDTHS)} (or {sorted(WIDTHS.values())} inches), "
                         f"got {width!r}")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def layer_profile(ax: Axes, values: Sequence[float], *, label: str | None = None, color: str | None = None,
                  marker: str | None = None, start: int = 1, **line) -> None:
    """Plot a per-layer quantity against layer number on a log axis.

    Layers are numbered from ``start`` on the input side. Non-finite or non-positive values
    cannot be shown on a log axis: they are marked with an ✕ on the axis floor and the label
    says "diverged", so a blown-up run is visible rather than silently missing. Without ``marker``,
    each profile of an axes takes the next marker of the style's cycle. Further keywords
    (``linestyle``, ``markerfacecolor``, ...) go to ``ax.plot``.
    """
    layers = list(range(start, start + len(values)))
    good = [(i, v) for i, v in zip(layers, values, strict=True) if math.isfinite(v) and v > 0]
    bad = [i for i, v in zip(layers, values, strict=True) if not (math.isfinite(v) and v > 0)]
    if bad and label is not None:
        label = f"{label} (diverged at {len(bad)} layers)"
    if good:
        xs, ys = zip(*good, strict=True)
        (drawn,) = ax.plot(xs, ys, marker=marker, label=label, color=color, **line)
        color = drawn.get_color()
    ax.set_yscale("log")
    if bad:
        ax.plot(bad, [ax.get_ylim()[0]] * len(bad), "x", color=color or "k", clip_on=False,
                label=None if good else label)
    ax.set_xlabel("layer (1 = nearest the input)")


#: Node kinds of :func:`draw_graph` and their fill colours.
NODE_KINDS = {"value": "#FFFFFF", "param": "#DCEBF7", "loss": "#FBE3D6", "op": "#F2F2F2"}
#: Edge styles of :func:`draw_graph`: forward (black, solid) and backward (vermillion, dashed).
EDGE_STYLES = {
    "forward": dict(color="black", linestyle="-", connectionstyle="arc3,rad=0"),
    "backward": dict(color=PALETTE["vermillion"], linestyle="--", connectionstyle="arc3,rad=-0.35"),
}


def draw_graph(ax: Axes, nodes: dict[str, tuple[float, float, str, str]],
               edges: Sequence[tuple[str, str, str, str]]) -> None:
    """Draw a computational graph on ``ax`` (axes switched off).

    ``nodes`` maps a name to ``(x, y, text, kind)`` with ``kind`` one of :data:`NODE_KINDS`;
    ``edges`` are ``(source, target, label, style)`` with ``style`` one of :data:`EDGE_STYLES`
    (``label`` may be empty). Text may contain Matplotlib mathtext (``"$z^1$"``).
    """
    for name, (x, y, text, kind) in nodes.items():
        one_of(f"kind of node {name!r}", kind, NODE_KINDS)
        ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", facecolor=NODE_KINDS[kind], edgecolor="#444444"))
    for source, target, label, style in edges:
        for end in (source, target):
            one_of("edge end", end, nodes)
        one_of(f"style of edge {source}->{target}", style, EDGE_STYLES)
        (x0, y0, *_), (x1, y1, *_) = nodes[source], nodes[target]
        spec = EDGE_STYLES[style]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=2,
                    arrowprops=dict(arrowstyle="-|>", shrinkA=14, shrinkB=14, lw=1.3, color=spec["color"],
                                    linestyle=spec["linestyle"], connectionstyle=spec["connectionstyle"]))
        if label:
            # forward labels sit just above their arrow; backward arrows bow below the row, labels under the bow
            below = style == "backward"
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (-0.3 if below else 0.04), label, ha="center",
                    va="top" if below else "bottom", fontsize=9, color=spec["color"])
    ax.set_axis_off()


def glue_text(name: str, text: str) -> None:
    """Glue ``text`` (Markdown) under ``name`` for the ``{glue}`` role: :func:`deepgrad.book.glue` with a str."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} {text!r}")
    glue(name, text)


class RenderedFigure:
    """A figure rendered for the page: PNG bytes, the CSS width to show it at, and its measurements.

    ``info`` holds ``display_px`` (CSS width), ``dpi``, ``width_in``, ``overflow_px`` (how far the
    drawing reaches beyond the figure's edges, cut off), ``min_font_pt``
    and ``min_font_px`` (the smallest text drawn, at the displayed size). It is stored in the PNG as a
    ``deepgrad`` text chunk, where tests/test_figures.py reads it back from the built book.
    """

    def __init__(self, png: bytes, info: dict, text: str):
        self.png, self.info, self.text = png, info, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return ({"image/png": self.png, "text/plain": self.text},
                {"image/png": {"width": self.info["display_px"]}})


def _font_sizes(fig: Figure) -> list[float]:
    """Sizes in points of every non-empty text the figure draws (recorded while drawing it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg

    sizes: list[float] = []

    class Recorder(RendererAgg):
        def draw_text(self, gc, x, y, s, prop, angle, ismath=False, mtext=None):
            if s.strip():
                sizes.append(prop.get_size_in_points())

    FigureCanvasAgg(fig)
    width, height = fig.get_size_inches() * fig.dpi
    fig.draw(Recorder(width, height, fig.dpi))
    return sizes


def _spread_markers(fig: Figure, most: int = 25) -> None:
    """Thin the markers of dense lines to about a dozen per line (every n-th point), so that noisy
    lines do not turn into a row of markers."""
    for line in fig.findobj(Line2D):
        points = len(line.get_xdata())
        if line.get_marker() not in ("None", "", None, " ") and line.get_markevery() is None \
                and line.get_linestyle() not in ("None", "", " ") and points > most:
            line.set_markevery(points // 12)


def render(fig: Figure) -> RenderedFigure:
    """Render ``fig`` as a PNG at :data:`OVERSAMPLE` times its displayed size, and measure its text.

    The displayed width follows the width scheme: ``COLUMN_PX * width / WIDTHS["full"]`` CSS pixels.
    The PNG keeps the figure's own size (no tight cropping), so every figure of one width is shown
    at one scale and its fonts at ``size * PX_PER_PT`` pixels.
    """
    import json
    from io import BytesIO

    _spread_markers(fig)
    width_in = fig.get_size_inches()[0]
    display_px = round(COLUMN_PX * width_in / FULL_WIDTH)
    dpi = OVERSAMPLE * COLUMN_PX / FULL_WIDTH
    sizes = _font_sizes(fig)
    min_pt = min(sizes) if sizes else None
    # how far the drawing reaches beyond the figure's edges (cut off in the PNG), in displayed pixels
    drawn, edges = fig.get_tightbbox(), fig.bbox_inches
    beyond = max(0.0, edges.x0 - drawn.x0, edges.y0 - drawn.y0, drawn.x1 - edges.x1, drawn.y1 - edges.y1)
    info = {"display_px": display_px, "dpi": dpi, "width_in": float(width_in),
            "overflow_px": round(float(beyond) * COLUMN_PX / FULL_WIDTH, 1),
            "min_font_pt": min_pt, "min_font_px": None if min_pt is None else round(min_pt * PX_PER_PT, 2)}
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white",
                metadata={"deepgrad": json.dumps(info, sort_keys=True)})
    return RenderedFigure(buffer.getvalue(), info, repr(fig))


def glue_figure(name: str, fig: Figure) -> None:
    """Glue ``fig`` under ``name`` for a ``{glue:figure}`` directive, and close it.

    The figure is drawn by :func:`render`: a PNG at twice its displayed size, shown at its width in
    the book's scheme (Sphinx links a scaled image to the full-size file, so a click or tap enlarges
    it). For the book (``DEEPGRAD_BOOK=1``, :func:`deepgrad.book.in_book`) it is stored hidden and
    MyST-NB draws it where the text places it; closing keeps it from also being shown where it was
    made. Anywhere else (Jupyter, Binder, Colab) nothing would place it, so it is shown here, once,
    and MyST-NB need not be installed.
    """
    if not in_book():
        from IPython import get_ipython
        from IPython.display import display  # IPython comes with every Jupyter kernel

        if get_ipython() is not None:  # in a plain Python process there is nowhere to show it
            display(render(fig))
        plt.close(fig)
        return
    from myst_nb import glue  # imported here: the library itself does not need MyST-NB

    glue(name, render(fig), display=False)
    plt.close(fig)
