"""The figure check: every figure crisp, legible at its displayed size, in the width scheme, enlargeable.

Two parts:

- the house style itself (no build needed): :func:`deepgrad.plotting.render` stores a PNG at twice its
  displayed size with its measurements (displayed width, DPI, smallest font) in a ``deepgrad`` text
  chunk, and those measurements are right, including for a figure that breaks the rules;
- every figure of a built book (``_build/html``, or ``BOOK_HTML``; skipped without one): each
  ``{glue:figure}`` of each chapter is on its page, as a PNG with those measurements, shown at its
  width in the scheme, stored at twice that, with no text smaller than ``MIN_FONT_PX`` on the page,
  nothing cut off at its edges, and linked to its full-size file (a click or tap enlarges it).
"""

import io
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from PIL import Image  # noqa: E402

from deepgrad import plotting  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html")).resolve()
DISPLAY_WIDTHS = {round(plotting.COLUMN_PX * w / plotting.FULL_WIDTH) for w in plotting.WIDTHS.values()}


def _luminance(colour: str) -> float:
    def channel(c):
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in to_rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast_on_white(colour: str) -> float:
    """WCAG contrast ratio of ``colour`` against white."""
    return 1.05 / (_luminance(colour) + 0.05)


def _info(png: Path | bytes) -> dict | None:
    """The measurements :func:`deepgrad.plotting.render` stored in a PNG, with its size; None without them."""
    with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as image:
        if "deepgrad" not in image.info:
            return None
        return {**json.loads(image.info["deepgrad"]), "size": image.size}


def _ink_on_the_edge(png: Path, band: int = 2) -> str | None:
    """The first edge of the image with dark pixels in its outer ``band`` pixels (drawn, then cut)."""
    import numpy as np

    with Image.open(png) as image:
        grey = np.asarray(image.convert("L"))
    for name, strip in (("top", grey[:band]), ("bottom", grey[-band:]), ("left", grey[:, :band]),
                        ("right", grey[:, -band:])):
        if (strip < 200).any():
            return name
    return None


# --- the house style ---------------------------------------------------------------------------

def test_style_renders_at_twice_the_displayed_size():
    plotting.use_style()
    assert matplotlib.rcParams["savefig.dpi"] == pytest.approx(
        plotting.OVERSAMPLE * plotting.COLUMN_PX / plotting.FULL_WIDTH)
    assert matplotlib.rcParams["figure.facecolor"] == "white"  # opaque: survives an inverting dark mode


def test_every_series_colour_reads_on_white_and_differs_without_colour():
    plotting.use_style()
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()
    colours = cycle["color"] + [plotting.color(name) for name in plotting._ROLE_COLORS]
    # no yellow on white: Okabe-Ito's orange and sky blue (2.3:1) are the lightest allowed, for lines
    # drawn 1.8 pt wide; its yellow (1.3:1) is out
    for colour in colours:
        assert _contrast_on_white(colour) >= 2.0, colour
    assert _contrast_on_white(plotting.PALETTE["yellow"]) < 2.0  # the check can fail
    assert len(set(cycle["marker"])) == len(cycle["marker"]) == len(cycle["color"])


def test_sigmoid_and_tanh_differ_in_marker_and_dashes():
    sigmoid, tanh = plotting.style("sigmoid"), plotting.style("tanh")
    assert sigmoid["marker"] != tanh["marker"] and sigmoid["linestyle"] != tanh["linestyle"]
    with pytest.raises(ValueError, match="name"):
        plotting.style("softmax")


def test_figure_widths_come_from_the_scheme():
    for width in ("full", "narrow", plotting.WIDTHS["narrow"]):
        fig, _ = plotting.figure(width=width)
        assert fig.get_size_inches()[0] in plotting.WIDTHS.values()
        plt.close(fig)
    with pytest.raises(ValueError, match="width"):
        plotting.figure(width=4.6)
    with pytest.raises(ValueError, match="width"):
        plotting.figure(width="half")


def test_render_measures_size_dpi_and_the_smallest_font():
    plotting.use_style()
    fig, ax = plotting.figure(ncols=2, height=3.0)
    ax[0].plot(range(100), label="a")
    ax[0].legend()
    rendered = plotting.render(fig)
    info = _info(rendered.png)
    assert info["size"][0] == 2 * plotting.COLUMN_PX and abs(info["size"][1] - 3.0 * info["dpi"]) <= 1
    assert info["display_px"] == plotting.COLUMN_PX
    bundle, meta = rendered._repr_mimebundle_()
    assert meta["image/png"]["width"] == plotting.COLUMN_PX and bundle["image/png"] == rendered.png
    smallest = min(matplotlib.rcParams[k] for k in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize"))
    assert info["min_font_pt"] == pytest.approx(smallest)
    assert info["min_font_px"] >= plotting.MIN_FONT_PX
    # the dense line's markers are thinned, so its line style shows between them
    assert ax[0].get_lines()[0].get_markevery() is not None
    plt.close(fig)


def test_render_measures_what_the_figure_cuts_off():
    plotting.use_style()
    fig, axes = plotting.figure(ncols=3)
    assert plotting.render(fig).info["overflow_px"] == 0
    axes[2].set_title("a title far too long for the last of three panels in a row")
    assert plotting.render(fig).info["overflow_px"] > 10
    plt.close(fig)


def test_render_catches_text_too_small_to_read():
    plotting.use_style()
    fig, ax = plotting.figure(width="narrow")
    ax.text(0.5, 0.5, "a footnote", fontsize=5)
    ax.text(0.5, 0.2, "   ", fontsize=2)  # blank text draws nothing and does not count
    info = plotting.render(fig).info
    assert info["min_font_pt"] == 5 and info["min_font_px"] < plotting.MIN_FONT_PX
    assert info["display_px"] == round(plotting.COLUMN_PX * plotting.WIDTHS["narrow"] / plotting.FULL_WIDTH)
    plt.close(fig)


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.md")), ids=lambda p: p.stem)
def test_a_figure_is_drawn_in_a_cell_the_reader_can_open(path):
    """A figure's plotting code is never removed from the page (at most collapsed, ``hide-input``): a
    hidden cell (``remove-cell``) holds checks and glued numbers, not a drawing."""
    import jupytext

    hidden = [index for index, cell in enumerate(jupytext.read(path).cells)
              if cell.cell_type == "code" and "remove-cell" in cell.metadata.get("tags", [])
              and re.search(r"\bglue_figure\(|\bplotting\.figure\(", cell.source)]
    assert not hidden, f"chapters/{path.name}: cells {hidden} draw a figure in a remove-cell cell"


# --- every figure of the built book ------------------------------------------------------------

def _chapters_in_order() -> list[str]:
    toc = (ROOT / "_toc.yml").read_text()
    return re.findall(r"file: chapters/([\w-]+)", toc)


def _glued_figures(stem: str) -> list[str]:
    text = (ROOT / "chapters" / f"{stem}.md").read_text()
    return re.findall(r"^[`:]{3,}\{glue:figure\} ([\w-]+)\s*$", text, re.M)


BUILT = [stem for stem in _chapters_in_order() if (HTML / "chapters" / f"{stem}.html").exists()]
needs_build = pytest.mark.skipif(not BUILT, reason=f"no built book in {HTML}: run `make book` first (or set BOOK_HTML)")


@pytest.mark.built_book
@needs_build
@pytest.mark.parametrize("stem", BUILT)
def test_every_figure_is_crisp_legible_and_enlargeable(stem):
    from bs4 import BeautifulSoup

    page = HTML / "chapters" / f"{stem}.html"
    soup = BeautifulSoup(page.read_text(), "html.parser")
    figures = [f for f in soup.select("figure") if f.select_one("img[src$='.png']")]
    assert len(figures) == len(_glued_figures(stem)), (
        f"{stem}: {len(figures)} figures on the page, {len(_glued_figures(stem))} {{glue:figure}} in the chapter")
    problems = []
    for number, figure in enumerate(figures, 1):
        img = figure.select_one("img[src$='.png']")
        where = f"{stem}, figure {number} ({figure.get('id')})"
        info = _info((page.parent / img["src"]).resolve())
        if info is None:
            problems.append(f"{where}: {img['src']} has no measurements (not drawn by deepgrad.plotting.render)")
            continue
        shown = re.search(r"width:\s*([\d.]+)px", img.get("style", "") + ";" + f"width:{img.get('width', '')}px")
        if shown is None or round(float(shown.group(1))) != info["display_px"]:
            problems.append(f"{where}: shown at {img.get('style')!r}, not its {info['display_px']} px")
        if info["display_px"] not in DISPLAY_WIDTHS:
            problems.append(f"{where}: {info['display_px']} px wide, not one of the widths {sorted(DISPLAY_WIDTHS)}")
        if info["size"][0] < 2 * info["display_px"]:
            problems.append(f"{where}: {info['size'][0]} px stored for {info['display_px']} px shown (< 2x)")
        if info["dpi"] < 2 * plotting.COLUMN_PX / plotting.FULL_WIDTH - 1e-6:  # 2 px per CSS px
            problems.append(f"{where}: {info['dpi']} dpi")
        if info["min_font_px"] is not None and info["min_font_px"] < plotting.MIN_FONT_PX:
            problems.append(f"{where}: text of {info['min_font_pt']} pt is {info['min_font_px']} px on the page "
                            f"(< {plotting.MIN_FONT_PX} px)")
        if info.get("overflow_px", 0) > 1:
            problems.append(f"{where}: the drawing reaches {info['overflow_px']} px beyond the figure's edge (cut off)")
        edge = _ink_on_the_edge((page.parent / img["src"]).resolve())
        if edge:
            problems.append(f"{where}: ink on its {edge} edge (something is cut off)")
        link = img.find_parent("a")
        if link is None or Path(link["href"]).name != Path(img["src"]).name:
            problems.append(f"{where}: not linked to its full-size image")
    assert not problems, "\n".join(problems)
