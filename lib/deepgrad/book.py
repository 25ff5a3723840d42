"""Numbers as the book prints them, and the one way chapters hand them to the text.

- :func:`significant` rounds to a number of significant digits;
- :func:`scientific` writes a number as a reader would: ``0.16``, ``512``, ``8.9 × 10⁻⁸``;
- :func:`glue` rounds, formats and hands a value to MyST-NB's ``glue`` for the ``{glue}`` roles;
- :func:`in_book` tells whether the code runs for a build of the book (``DEEPGRAD_BOOK=1``).

Chapters round what they print and glue so that the last bits of a floating-point result, which
can differ between CPU models, never reach the book's text or its recorded outputs.

Two modes, chosen by the environment variable ``DEEPGRAD_BOOK``. The executions made for the book
(the build, nbval, the recorded references: ``tools/chapters.py``, the Makefile, the book's Sphinx
extension) set it to ``1``; there :func:`glue` stores the value, hidden, for MyST-NB, which puts it
into the text. Anywhere else (a chapter run in Jupyter, Binder or Colab) nothing would put it into
the text, so :func:`glue` shows it where it is made instead, as a small Markdown line naming the key,
and MyST-NB need not be installed. This module imports neither matplotlib nor MyST-NB.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

from deepgrad._checks import positive_int

__all__ = ["glue", "in_book", "scientific", "significant"]

#: The environment variable that marks an execution made for the book (``1``) from any other.
BOOK_ENV = "DEEPGRAD_BOOK"

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def significant(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (non-finite values unchanged).

    The rounding is the decimal one of ``f"{value:.{digits - 1}e}"`` (round half to even on the
    binary value), so ``significant(0.123456, 3) == 0.123``.
    """
    positive_int("digits", digits)
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{digits - 1}e}")


def scientific(value: float, digits: int = 2) -> str:
    """``value`` to ``digits`` significant digits, as a reader writes it: ``8.9 × 10⁻⁸``.

    Numbers between 0.01 and 10,000 are written plainly (``0.16``, ``512``); non-finite ones as
    ``nan``/``inf``; an exact power of ten as ``10⁻⁷``.
    """
    positive_int("digits", digits)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        rounded = float(f"{value:.{digits - 1}e}")
        if abs(rounded) >= 10 ** (digits - 1):  # the integer part holds every significant digit: 253 -> 250
            return f"{rounded:.0f}"
        return f"{value:#.{digits}g}".rstrip(".")
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    power = f"10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    return power if mantissa in ("1", "1.0") else f"{mantissa} × {power}".replace("-", "−", 1)


def glued_value(value: Any, digits: int | None = 4, *, scientific: bool = False) -> Any:
    """What :func:`glue` stores for ``value`` (see there); exposed so that it can be checked without MyST-NB."""
    if digits is not None:
        positive_int("digits", digits)
    if isinstance(value, str):
        if scientific:
            raise TypeError("scientific=True needs a number as value, got str "
                            f"{value!r}; glue the text itself with scientific=False")
        return _markdown(value)
    if isinstance(value, numbers.Integral) and not scientific:
        return value  # ints (and bools) are exact: stored as they are
    if not isinstance(value, numbers.Real):
        try:  # a one-element tensor or array: a float, as significant() and scientific() read it
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"value must be a real number, a one-element tensor or a str, "
                            f"got {type(value).__name__} {value!r}") from None
    if scientific:
        return _markdown(_scientific(value, 2 if digits is None else digits))
    return float(value) if digits is None else significant(value, digits)


_scientific = scientific  # glued_value's keyword of the same name hides the function


def in_book() -> bool:
    """Whether this code runs for a build of the book: ``DEEPGRAD_BOOK=1`` (unset, empty or ``0``: no).

    Any other value is a ``ValueError``, so that a typo does not silently switch the mode.
    """
    flag = os.environ.get(BOOK_ENV, "")
    if flag not in ("", "0", "1"):
        raise ValueError(f"the environment variable {BOOK_ENV} must be '1' (an execution for the book) "
                         f"or '0'/unset (anywhere else), got {flag!r}")
    return flag == "1"


def glue(name: str, value: Any, digits: int | None = 4, *, scientific: bool = False) -> None:
    """Glue ``value`` under ``name`` for the ``{glue}`` and ``{glue:text}`` roles.

    For the book (:func:`in_book`) the value is hidden where it is made and MyST-NB puts it into the
    text; anywhere else it is shown where it is made, as ``name = value`` (:func:`show_glued`).

    What is stored, by type of ``value``:

    - a float (or NumPy float, or one-element tensor): rounded to ``digits`` significant digits
      (:func:`significant`) and stored as a number, so that ``{glue:text}`name:.1f``` can still
      format it; ``digits=None`` stores it unrounded;
    - an int: stored as it is;
    - a str: stored as Markdown, so that it appears without quotes;
    - any number with ``scientific=True``: written by :func:`scientific` with ``digits`` digits
      (``8.9 × 10⁻⁸``) and stored as Markdown.

    For the book it is ``myst_nb.glue(name, glued_value(value, digits), display=False)``; MyST-NB is
    imported only then, so that the library works without it.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError("name must be a non-empty str, got ''")
    stored = glued_value(value, digits, scientific=scientific)
    if not in_book():
        show_glued(name, stored)
        return
    from myst_nb import glue as myst_glue  # imported here: the library itself does not need MyST-NB

    myst_glue(name, stored, display=False)


def glued_text(stored: Any) -> str:
    """The text of a stored glue value, as the ``{glue}`` role prints it (Markdown without quotes)."""
    data = getattr(stored, "data", None)
    return data if isinstance(data, str) else str(stored)


def show_glued(name: str, stored: Any) -> None:
    """Show a glued value where it was made: ``name = value`` (Markdown in Jupyter, text elsewhere)."""
    from IPython import get_ipython
    from IPython.display import display  # IPython comes with every Jupyter kernel

    text = glued_text(stored)
    if get_ipython() is None:  # a plain Python process: a line of text
        print(f"{name} = {text}")
        return
    display({"text/markdown": f"`{name}` = {text}", "text/plain": f"{name} = {text}"}, raw=True)


def _markdown(text: str) -> Any:
    from IPython.display import Markdown  # IPython comes with every Jupyter kernel; imported only for text

    return Markdown(text)
