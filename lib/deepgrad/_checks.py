"""Argument validation shared by the public API, with one rule for every check.

A value of the wrong *type* raises ``TypeError``; a value of the right type that is not allowed raises
``ValueError``. Every message names the argument and says what is allowed. ``bool`` is not a number
here (``True`` is an ``int`` to Python, never a sensible learning rate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def number(name: str, value: Any, what: str = "a number") -> float:
    """``value`` as a float if it is a real number (int or float, not bool); otherwise ``TypeError``."""
    if not _is_number(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return float(value)


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``; otherwise raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def fraction(name: str, value: Any, *, open_low: bool = True, open_high: bool = True) -> float:
    """Return ``value`` if it is a real number inside (0, 1) (ends as requested)."""
    lo = "(" if open_low else "["
    hi = ")" if open_high else "]"
    number(name, value, f"a number in {lo}0, 1{hi}")
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    if not (low_ok and high_ok):
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")
    return float(value)


def finite(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number."""
    value = number(name, value, "a finite number")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float if it is a number > 0 (finite unless ``allow_inf``)."""
    what = "a number > 0 (math.inf allowed)" if allow_inf else "a finite number > 0"
    value = number(name, value, what)
    if not value > 0 or (value == math.inf and not allow_inf):
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def non_negative(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float if it is a number >= 0 (finite unless ``allow_inf``)."""
    what = "a number >= 0 (math.inf allowed)" if allow_inf else "a finite number >= 0"
    value = number(name, value, what)
    if not value >= 0 or (value == math.inf and not allow_inf):
        raise ValueError(f"{name} must be {what}, got {value}")
    return value


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; otherwise raise listing them."""
    allowed = list(allowed)
    if value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def instance_of(name: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    """Return ``value`` if it is an instance of ``types``; otherwise ``TypeError`` saying ``what`` is allowed."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not 0/1, not a string); otherwise ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def floating_dtype(name: str, value: Any) -> torch.dtype:
    """``value`` if it is a floating-point ``torch.dtype``: real-valued data cast to an integer type would
    be truncated (a z-score of 0.7 becomes 0), so integer, bool and complex types are refused."""
    if not isinstance(value, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype (a floating-point one, e.g. torch.float32), "
                        f"got {type(value).__name__} {value!r}")
    if not value.is_floating_point:
        raise ValueError(f"{name} must be a floating-point torch.dtype (torch.float16, bfloat16, float32 "
                         f"or float64): the features are real numbers; got {value}")
    return value
