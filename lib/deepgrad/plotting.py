"""One house style for every figure in the book, and the helpers chapters share.

- :func:`use_style` sets Matplotlib's defaults: sizes for a book column, light grids, no top/right
  spines and the colour-blind-safe Okabe–Ito palette (Okabe & Ito, 2008).
- :func:`color` gives each activation (and a few roles) a fixed colour across chapters.
- :func:`layer_profile` draws one per-layer quantity (a gradient norm, say) on a log axis, marking
  non-finite values as diverged instead of failing.
- :func:`draw_graph` draws a small computational graph (nodes in boxes, forward and backward arrows).
- :func:`glue_figure` hands a figure to MyST-NB's ``glue`` for a numbered, captioned ``{glue:figure}``
  (for the book), or shows it where it was made (anywhere else: see :func:`deepgrad.book.in_book`).

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
    "gold": "#A88B00",    # a dark gold that reads on white, in yellow's place
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

#: Width of a full-width book figure, in inches.
FULL_WIDTH = 7.5


def use_style() -> None:
    """Apply the book's Matplotlib style (call once at the top of a chapter)."""
    mpl.rcParams.update({
        "figure.figsize": (FULL_WIDTH, 3.4),
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "figure.constrained_layout.use": True,
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.6,
        "lines.linewidth": 1.8,
        "lines.markersize": 5,
        "axes.prop_cycle": mpl.cycler(color=[PALETTE[k] for k in
                                             ("blue", "orange", "green", "vermillion", "sky", "purple", "black")]),
        "image.cmap": "viridis",
    })


def color(name: str) -> str:
    """The fixed colour of an activation or role (``"healthy"``, ``"sick"``, ``"reference"``)."""
    one_of("name", name, _ROLE_COLORS)
    return _ROLE_COLORS[name]


def figure(ncols: int = 1, nrows: int = 1, *, height: float = 3.4, width: float = FULL_WIDTH,
           **kwargs) -> tuple[Figure, Axes | Sequence[Axes]]:
    """A new figure in the book's size; returns ``(fig, axes)`` like ``plt.subplots``."""
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def layer_profile(ax: Axes, values: Sequence[float], *, label: str | None = None, color: str | None = None,
                  marker: str = "o", start: int = 1) -> None:
    """Plot a per-layer quantity against layer number on a log axis.

    Layers are numbered from ``start`` on the input side. Non-finite or non-positive values
    cannot be shown on a log axis: they are marked with an ✕ on the axis floor and the label
    says "diverged", so a blown-up run is visible rather than silently missing.
    """
    layers = list(range(start, start + len(values)))
    good = [(i, v) for i, v in zip(layers, values, strict=True) if math.isfinite(v) and v > 0]
    bad = [i for i, v in zip(layers, values, strict=True) if not (math.isfinite(v) and v > 0)]
    if bad and label is not None:
        label = f"{label} (diverged at {len(bad)} layers)"
    if good:
        xs, ys = zip(*good, strict=True)
        (line,) = ax.plot(xs, ys, marker=marker, label=label, color=color)
        color = line.get_color()
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


def glue_figure(name: str, fig: Figure) -> None:
    """Glue ``fig`` under ``name`` for a ``{glue:figure}`` directive, and close it.

    For the book (``DEEPGRAD_BOOK=1``, :func:`deepgrad.book.in_book`) the figure is stored hidden and
    MyST-NB draws it where the text places it; closing keeps it from also being shown where it was
    made. Anywhere else (Jupyter, Binder, Colab) nothing would place it, so it is shown here, once,
    and MyST-NB need not be installed.
    """
    if not in_book():
        from IPython import get_ipython
        from IPython.display import display  # IPython comes with every Jupyter kernel

        if get_ipython() is not None:  # in a plain Python process there is nowhere to show it
            display(fig)
        plt.close(fig)
        return
    from myst_nb import glue  # imported here: the library itself does not need MyST-NB

    glue(name, fig, display=False)
    plt.close(fig)
