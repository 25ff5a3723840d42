"""Learning rates over time: the range test that picks one, and the schedules that vary it.

- :func:`lr_range_test` (Smith 2017): train for a few steps while the learning rate grows
  geometrically from ``start`` to ``end``; the smoothed loss falls, bottoms out and blows up.
  :meth:`RangeTest.suggestion` is the learning rate at the bottom divided by a safety factor.
- Closed-form schedules, written from their formulas and tested against
  :mod:`torch.optim.lr_scheduler`: :func:`step_lr` (``StepLR``), :func:`cosine_lr`
  (``CosineAnnealingLR``, Loshchilov & Hutter 2017), :func:`triangular_lr` (``CyclicLR``,
  Smith 2017), :func:`one_cycle_lr` (``OneCycleLR``, Smith & Topin 2019) and the warm-up-then-cosine
  factor :func:`warmup_cosine` (Goyal et al. 2017; Loshchilov & Hutter 2017).

Steps are counted from 0 (the learning rate of the first update), as ``scheduler.last_epoch`` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepgrad._checks import fraction, positive, positive_int
from deepgrad.data import Split
from deepgrad.train import Callback, History, LearningRate, Run, cycle, loop


def step_lr(step: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Step decay: ``η_t = η · γ^⌊t / step_size⌋`` (multiply by ``gamma`` every ``step_size`` steps)."""
    positive_int("step", step, minimum=0)
    positive_int("step_size", step_size)
    return positive("lr", lr) * positive("gamma", gamma) ** (step // step_size)


def cosine_lr(step: int, lr: float, total: int, lr_min: float = 0.0) -> float:
    """Cosine annealing: ``η_t = η_min + (η - η_min) (1 + cos(π t / T)) / 2`` for ``t ≤ T = total``."""
    positive_int("step", step, minimum=0)
    positive_int("total", total)
    if step > total:
        raise ValueError(f"step must be at most total={total}, got {step}")
    return lr_min + (positive("lr", lr) - lr_min) * (1 + math.cos(math.pi * step / total)) / 2


def triangular_lr(step: int, base_lr: float, max_lr: float, step_size: int) -> float:
    """Cyclical learning rate, triangular policy: from ``base_lr`` up to ``max_lr`` in ``step_size``
    steps, back down in as many, and again: ``η_t = η_base + (η_max - η_base) · max(0, 1 - |x|)``
    with ``x = t / step_size - 2 ⌊1 + t / (2 step_size)⌋ + 1``."""
    positive_int("step", step, minimum=0)
    positive_int("step_size", step_size)
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    return positive("base_lr", base_lr) + (positive("max_lr", max_lr) - base_lr) * max(0.0, 1 - x)


def one_cycle_lr(step: int, max_lr: float, total: int, *, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """The one-cycle policy (cosine version, PyTorch's default): warm up from ``max_lr / div_factor``
    to ``max_lr`` over the first ``pct_start`` of the ``total`` steps, then anneal to
    ``max_lr / (div_factor · final_div_factor)``, each phase along a half cosine
    ``η_end + (η_start - η_end) (1 + cos(π p)) / 2``, ``p`` the fraction of the phase done."""
    positive_int("step", step, minimum=0)
    positive_int("total", total, minimum=2)
    if step >= total:
        raise ValueError(f"step must be less than total={total}, got {step}")
    fraction("pct_start", pct_start)
    initial = positive("max_lr", max_lr) / positive("div_factor", div_factor)
    final = initial / positive("final_div_factor", final_div_factor)
    peak = float(pct_start * total) - 1
    if step <= peak:
        start, end, p = initial, max_lr, step / peak
    else:
        start, end, p = max_lr, final, (step - peak) / (total - 1 - peak)
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``.

    (step + 1)/warmup for step < warmup (Goyal et al. 2017), then ½(1 + cos(π (step − warmup) /
    (total − warmup))) (Loshchilov & Hutter 2017). Steps count from 0, the first update; this is
    ``torch.optim.lr_scheduler.LinearLR(start_factor=1/warmup, total_iters=warmup − 1)`` followed by
    ``CosineAnnealingLR(T_max=total − warmup)``.
    """
    positive_int("warmup", warmup)
    positive_int("total", total, minimum=warmup + 1)
    positive_int("step", step, minimum=0)
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))


class RangeTest(History):
    """What :func:`lr_range_test` measured: a :class:`~deepgrad.train.History` with the learning rate of
    every step and its mini-batch loss."""

    @property
    def lrs(self) -> list[float]:
        return self.logs.get("lr", [])

    @property
    def losses(self) -> list[float]:
        """Raw mini-batch losses (the last may be non-finite)."""
        return self.train_loss

    @property
    def smoothed(self) -> list[float]:
        """Bias-corrected exponential average of the losses."""
        return self.logs.get("smoothed", [])

    def best(self) -> float:
        """The learning rate at which the smoothed loss is lowest."""
        if not self.smoothed:
            raise ValueError("the range test recorded no finite loss")
        i = min(range(len(self.smoothed)), key=self.smoothed.__getitem__)
        return self.lrs[i]

    def suggestion(self, divisor: float = 10.0) -> float:
        """``best() / divisor``: back off from the bottom of the curve, where the loss is about
        to blow up, by a safety factor (10 by default, a common rule of thumb)."""
        return self.best() / positive("divisor", divisor)


class SmoothedLossStop(Callback):
    """The range test's stopping rule: log the bias-corrected exponential average of the loss,
    s_k = a_k / (1 − β^(k+1)) with a_k = β a_{k−1} + (1 − β) L_k, as ``smoothed``, and end the run
    (before the update) once s_k exceeds ``stop_factor`` times its minimum so far."""

    def __init__(self, smoothing: float, stop_factor: float):
        self.smoothing = fraction("smoothing", smoothing, open_low=False)
        self.stop_factor = positive("stop_factor", stop_factor)

    def on_train_start(self, run: Run) -> None:
        self.average, self.best = 0.0, math.inf

    def after_loss(self, run: Run) -> None:
        self.average = self.smoothing * self.average + (1 - self.smoothing) * run.value
        smooth = self.average / (1 - self.smoothing ** run.step)
        run.history.log("smoothed", smooth)
        self.best = min(self.best, smooth)
        if smooth > self.stop_factor * self.best:
            run.stop = True


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer, split: Split, *,
                  start: float = 1e-5, end: float = 10.0, steps: int = 100, batch_size: int = 64,
                  smoothing: float = 0.9, stop_factor: float = 4.0,
                  generator: torch.Generator | None = None) -> RangeTest:
    """The learning-rate range test (Smith 2017): ``steps`` updates at geometrically growing rates.

    Step ``k = 0, ..., steps - 1`` sets every parameter group's rate to
    ``η_k = start · (end / start)^(k / (steps - 1))``, computes the loss of a fresh mini-batch,
    records it and updates. The recorded loss is smoothed with an exponential average
    (``smoothing`` = its β, bias-corrected). The test stops early once the smoothed loss exceeds
    ``stop_factor`` times its minimum, or a loss is not finite. ``model`` and ``optimizer`` are
    trained in place: pass fresh ones and throw them away afterwards. It is :func:`deepgrad.train.loop`
    with a :class:`~deepgrad.train.LearningRate` schedule and :class:`SmoothedLossStop`.
    """
    start, end = positive("start", start), positive("end", end)
    if end <= start:
        raise ValueError(f"end must be greater than start={start}, got {end}")
    positive_int("steps", steps, minimum=2)
    positive_int("batch_size", batch_size)
    callbacks = [LearningRate(lambda k: start * (end / start) ** (k / (steps - 1))),
                 SmoothedLossStop(smoothing, stop_factor)]
    return loop(model, cycle(split, batch_size, generator=generator), optimizer, steps=steps,
                callbacks=callbacks, history=RangeTest())
