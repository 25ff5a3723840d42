"""Paired evidence over seeds: is arm A better than arm B, by how much, and how sure are we?

:func:`compare` runs two functions of the seed, ``a(seed)`` and ``b(seed)``, on the same seeds
(paired: seed s gives both arms the same data order and the same initial draw where the
functions share their seeding) and returns a frozen :class:`Comparison`:

- the per-seed values of A and B and their differences :math:`d_s = a_s - b_s`;
- the mean difference :math:`\\bar d` with a 95 % percentile-bootstrap interval over seeds
  (Efron & Tibshirani, 1993, ch. 13): resample the n differences with replacement ``resamples``
  times, take each resample's mean, and read the 2.5 % and 97.5 % quantiles;
- the win count: A better on k of n seeds, with ``better="lower"`` (losses, errors, steps) or
  ``"higher"`` (accuracies);
- a verdict, ``"A better"``, ``"B better"`` or ``"tied"``: tied when the interval covers 0. The
  sentence for the text says "no difference detected" there, not "tied": an interval that covers 0
  fails to show a difference, it does not show that there is none. No winner is ever stated from
  fewer than 2 seeds (a :class:`ValueError`), and :meth:`Comparison.sentence` calls a comparison
  over fewer than :data:`MIN_SEEDS` seeds an illustration, not a claim.

Diverged runs (a value that is NaN or ±inf) are failures, reported and never dropped silently:

- in the win count a diverged run loses to a finished one (both diverged: neither wins);
- the mean difference and its interval are over the seeds where both arms finished
  (:attr:`Comparison.finished`);
- if one arm diverged on more seeds than the other, the verdict goes to the other arm whatever
  the interval says (a run that blew up is worse than any finished run); with equal counts the
  interval decides. The counts are attributes and the sentence states them.

The bootstrap uses its own fixed-seed NumPy ``Generator`` (``bootstrap_seed``): the same values
always give the same interval, and the global random state is left alone.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from deepgrad._checks import fraction, one_of, positive_int
from deepgrad.book import scientific
from deepgrad.workers import Runs, check_sendable

__all__ = ["MIN_SEEDS", "Comparison", "bootstrap_interval", "compare", "from_values"]

#: The book's standard: a claim that one arm beats another rests on at least this many seeds.
MIN_SEEDS = 5
#: Up to this many finished seeds :attr:`Comparison.sign_flip_p` lists every sign pattern.
_EXACT_SIGN_FLIPS = 16


@dataclass(frozen=True)
class Comparison:
    """The outcome of a paired comparison of arms A and B over the same seeds (see the module docstring)."""

    names: tuple[str, str]
    seeds: tuple[int, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    better: str
    mean_difference: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def n(self) -> int:
        """Number of seeds (pairs)."""
        return len(self.seeds)

    @property
    def differences(self) -> tuple[float, ...]:
        """Per-seed ``a - b`` (NaN where either arm diverged)."""
        return tuple(_difference(x, y) for x, y in zip(self.a, self.b, strict=True))

    @property
    def finished(self) -> int:
        """Number of seeds on which both arms finished (finite values): the mean and interval are over these."""
        return sum(math.isfinite(x) and math.isfinite(y) for x, y in zip(self.a, self.b, strict=True))

    @property
    def diverged_a(self) -> int:
        """Number of seeds on which A diverged (NaN or ±inf)."""
        return sum(not math.isfinite(x) for x in self.a)

    @property
    def diverged_b(self) -> int:
        """Number of seeds on which B diverged (NaN or ±inf)."""
        return sum(not math.isfinite(y) for y in self.b)

    @property
    def wins(self) -> int:
        """Seeds on which A is strictly better than B (a diverged run loses to a finished one): A better on k of n."""
        return sum(_beats(x, y, self.better) for x, y in zip(self.a, self.b, strict=True))

    @property
    def wins_b(self) -> int:
        """Seeds on which B is strictly better than A."""
        return sum(_beats(y, x, self.better) for x, y in zip(self.a, self.b, strict=True))

    @property
    def verdict(self) -> str:
        """``"A better"``, ``"B better"`` or ``"tied"`` (with the arms' names in place of A and B)."""
        a, b = self.names
        if self.diverged_a != self.diverged_b:
            return f"{b} better" if self.diverged_a > self.diverged_b else f"{a} better"
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low <= 0 <= self.high:
            return "tied"
        a_ahead = self.low > 0 if self.better == "higher" else self.high < 0
        return f"{a} better" if a_ahead else f"{b} better"

    @property
    def winner(self) -> str | None:
        """The name of the better arm, or None when tied."""
        verdict = self.verdict
        return None if verdict == "tied" else verdict.removesuffix(" better")

    @property
    def sign_flip_p(self) -> float:
        """Exact two-sided p-value of the paired sign-flip (randomisation) test on the finished seeds.

        Under the null hypothesis that A and B are exchangeable on every seed, each difference
        d_s is as likely to be -d_s; p is the share of the 2^n sign patterns whose mean is at least
        as far from 0 as the observed one (Fisher, 1935; Good, 2005). It is a check on the percentile
        bootstrap, which over-states certainty for few seeds: with 5 seeds the smallest possible p
        is 2/32 = 0.0625, however large the effect. ``nan`` when no seed finished in both arms. Exact
        up to 16 seeds; beyond, estimated from 65,536 sign patterns drawn with a fixed seed.
        """
        finished = [d for d in self.differences if math.isfinite(d)]
        if not finished:
            return math.nan
        values = np.asarray(finished, dtype=float)
        n = values.size
        if n <= _EXACT_SIGN_FLIPS:
            signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)  # every sign pattern
        else:  # too many patterns to list: a fixed-seed Monte Carlo sample of them
            signs = np.random.default_rng(0).choice([-1, 1], size=(2 ** _EXACT_SIGN_FLIPS, n))
        means = np.abs((signs * values).mean(axis=1))
        observed = abs(values.mean())
        return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))

    @property
    def illustration(self) -> bool:
        """True when the comparison rests on fewer than :data:`MIN_SEEDS` seeds: not enough to back a claim."""
        return self.n < MIN_SEEDS

    def sentence(self, digits: int = 2) -> str:
        """A short sentence for the text, numbers to ``digits`` significant digits, e.g.

        ``"A lower on 5 of 5 seeds; mean difference −0.12 (95 % interval −0.15 to −0.09): A better."``

        Where the interval covers 0 (the verdict ``"tied"``) it ends ``": no difference detected."``.
        """
        positive_int("digits", digits)
        a, b = self.names
        if self.wins == self.wins_b:
            parts = [f"{a} {self.better} on {self.wins} of {self.n} seeds, {b} on {self.wins_b}"]
        else:
            leader, wins = (a, self.wins) if self.wins > self.wins_b else (b, self.wins_b)
            parts = [f"{leader} {self.better} on {wins} of {self.n} seeds"]
        for name, count in ((a, self.diverged_a), (b, self.diverged_b)):
            if count:
                parts.append(f"{name} diverged on {count} of {self.n}")
        over = "" if self.finished == self.n else f" over the {self.finished} seeds both finished"
        if self.finished:
            parts.append(f"mean difference ({a} − {b}){over} {_number(self.mean_difference, digits)} "
                         f"({100 * self.level:g} % interval {_number(self.low, digits)} "
                         f"to {_number(self.high, digits)})")
        verdict = self.verdict
        text = "; ".join(parts) + f": {'no difference detected' if verdict == 'tied' else verdict}"
        if self.illustration:
            text += f" (an illustration: claims need at least {MIN_SEEDS} seeds)"
        return text + "."


def bootstrap_interval(differences: Sequence[float], *, level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``differences`` (Efron & Tibshirani, 1993, ch. 13).

    Draws ``resamples`` samples of size n with replacement using ``numpy.random.default_rng(seed)``,
    takes each one's mean, and returns the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    (NumPy's default linear interpolation). Equal differences give the degenerate interval (d, d).
    """
    values = np.asarray(differences, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"differences must be a non-empty 1-D sequence, got shape {values.shape}")
    fraction("level", level)
    positive_int("resamples", resamples)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def from_values(a: Sequence[float], b: Sequence[float], *, seeds: Sequence[int] | None = None,
                better: str = "lower", names: tuple[str, str] = ("A", "B"), level: float = 0.95,
                resamples: int = 10_000, bootstrap_seed: int = 0) -> Comparison:
    """A :class:`Comparison` from per-seed values already measured (``a[i]`` and ``b[i]`` share seed ``seeds[i]``)."""
    one_of("better", better, ["lower", "higher"])
    fraction("level", level)
    positive_int("resamples", resamples)
    if not (isinstance(names, tuple) and len(names) == 2 and all(isinstance(x, str) for x in names)):
        raise TypeError(f"names must be a tuple of two str, got {names!r}")
    a = tuple(float(x) for x in a)
    b = tuple(float(y) for y in b)
    if len(a) != len(b):
        raise ValueError(f"a and b must hold one value per seed each, got {len(a)} and {len(b)} values")
    seeds = tuple(range(len(a))) if seeds is None else tuple(seeds)
    if len(seeds) != len(a):
        raise ValueError(f"seeds must give one seed per value, got {len(seeds)} seeds for {len(a)} values")
    if len(a) < 2:
        raise ValueError(f"seeds: a winner cannot be stated from {len(a)} seed(s); give at least 2 "
                         f"(the book's standard for a claim is {MIN_SEEDS})")
    finished = [_difference(x, y) for x, y in zip(a, b, strict=True)]
    finished = [d for d in finished if math.isfinite(d)]
    if finished:
        mean = float(np.mean(finished))
        low, high = bootstrap_interval(finished, level=level, resamples=resamples, seed=bootstrap_seed)
    else:
        mean = low = high = math.nan
    return Comparison(names=names, seeds=seeds, a=a, b=b, better=better, mean_difference=mean,
                      low=low, high=high, level=float(level), resamples=resamples)


def compare(a: Callable[[int], float], b: Callable[[int], float], *, seeds: int | Sequence[int] = MIN_SEEDS,
            better: str = "lower", names: tuple[str, str] = ("A", "B"), workers: int = 1, level: float = 0.95,
            resamples: int = 10_000, bootstrap_seed: int = 0) -> Comparison:
    """Run ``a(seed)`` and ``b(seed)`` on the same seeds and compare them (see the module docstring).

    ``seeds`` is a count n (seeds 0 to n - 1) or the seeds themselves. Each call returns one number
    (a final loss, an accuracy, steps to a target); NaN or ±inf marks a diverged run.

    Every call runs with one PyTorch thread (the count is restored afterwards), so its result does
    not depend on ``workers``: ``workers=2`` runs the calls in two processes started with
    ``'spawn'`` (:class:`deepgrad.workers.Runs`) and gives the same values as ``workers=1``. The
    default is 1 because starting a worker costs about a second (it imports PyTorch), functions
    defined in a notebook cannot be sent to one, and the book's test runs already keep both cores
    busy with other chapters. With ``workers > 1``, ``a`` and ``b`` must be module-level functions
    (or ``functools.partial`` of them) importable by the worker; a lambda or a function defined in
    a notebook raises :class:`ValueError` before anything runs.
    """
    for arg, fn in (("a", a), ("b", b)):
        if not callable(fn):
            raise TypeError(f"{arg} must be a callable taking a seed, got {type(fn).__name__} {fn!r}")
    positive_int("workers", workers)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 2:
            raise ValueError(f"seeds: a winner cannot be stated from {seeds} seed(s); give at least 2 "
                             f"(the book's standard for a claim is {MIN_SEEDS})")
        seed_list = list(range(seeds))
    elif isinstance(seeds, Sequence) and all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                             for s in seeds):
        seed_list = [int(s) for s in seeds]
    else:
        raise TypeError(f"seeds must be an int or a sequence of int, got {type(seeds).__name__} {seeds!r}")
    if len(seed_list) < 2:
        raise ValueError(f"seeds: a winner cannot be stated from {len(seed_list)} seed(s); give at least 2 "
                         f"(the book's standard for a claim is {MIN_SEEDS})")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds must be distinct, got {seed_list}")
    if workers > 1:
        for arg, fn in (("a", a), ("b", b)):
            check_sendable(arg, fn)
    with Runs(workers) as runs:
        values = runs([functools.partial(fn, s) for s in seed_list for fn in (a, b)])
    return from_values(values[0::2], values[1::2], seeds=seed_list, better=better, names=names, level=level,
                       resamples=resamples, bootstrap_seed=bootstrap_seed)


def _difference(x: float, y: float) -> float:
    return x - y if math.isfinite(x) and math.isfinite(y) else math.nan


def _beats(x: float, y: float, better: str) -> bool:
    """Whether value ``x`` is strictly better than ``y``; a diverged value loses to a finite one."""
    if not math.isfinite(x):
        return False
    if not math.isfinite(y):
        return True
    return x > y if better == "higher" else x < y


def _number(value: float, digits: int) -> str:
    return "0" if value == 0 else scientific(value, digits).replace("-", "−")
