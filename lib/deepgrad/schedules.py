"""Learning rates over time: the range test that picks one, and the schedules that vary it.

- :func:`lr_range_test` (Smith 2017): train for a few steps while the learning rate grows
  geometrically from ``start`` to ``end``; the smoothed loss falls, bottoms out and blows up.
  :meth:`RangeTest.suggestion` is the learning rate at the bottom divided by a safety factor.
- Closed-form schedules, written from their formulas and tested against
  :mod:`torch.optim.lr_scheduler`: :func:`step_lr` (``StepLR``), :func:`cosine_lr`
  (``CosineAnnealingLR``, Loshchilov & Hutter 2017), :func:`triangular_lr` (``CyclicLR``,
  Smith 2017) and :func:`one_cycle_lr` (``OneCycleLR``, Smith & Topin 2019).

Steps are counted from 0 (the learning rate of the first update), as ``scheduler.last_epoch`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deepgrad._checks import fraction, positive_int
from deepgrad.data import Split, batches


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    return step


def step_lr(step: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    """Step decay: ``η_t = η · γ^⌊t / step_size⌋`` (multiply by ``gamma`` every ``step_size`` steps)."""
    _step(step)
    positive_int("step_size", step_size)
    return _positive("lr", lr) * _positive("gamma", gamma) ** (step // step_size)


def cosine_lr(step: int, lr: float, total: int, lr_min: float = 0.0) -> float:
    """Cosine annealing: ``η_t = η_min + (η - η_min) (1 + cos(π t / T)) / 2`` for ``t ≤ T = total``."""
    _step(step)
    positive_int("total", total)
    if step > total:
        raise ValueError(f"step must be at most total={total}, got {step}")
    return lr_min + (_positive("lr", lr) - lr_min) * (1 + math.cos(math.pi * step / total)) / 2


def triangular_lr(step: int, base_lr: float, max_lr: float, step_size: int) -> float:
    """Cyclical learning rate, triangular policy: from ``base_lr`` up to ``max_lr`` in ``step_size``
    steps, back down in as many, and again: ``η_t = η_base + (η_max - η_base) · max(0, 1 - |x|)``
    with ``x = t / step_size - 2 ⌊1 + t / (2 step_size)⌋ + 1``."""
    _step(step)
    positive_int("step_size", step_size)
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    return _positive("base_lr", base_lr) + (_positive("max_lr", max_lr) - base_lr) * max(0.0, 1 - x)


def one_cycle_lr(step: int, max_lr: float, total: int, *, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """The one-cycle policy (cosine version, PyTorch's default): warm up from ``max_lr / div_factor``
    to ``max_lr`` over the first ``pct_start`` of the ``total`` steps, then anneal to
    ``max_lr / (div_factor · final_div_factor)``, each phase along a half cosine
    ``η_end + (η_start - η_end) (1 + cos(π p)) / 2``, ``p`` the fraction of the phase done."""
    _step(step)
    positive_int("total", total, minimum=2)
    if step >= total:
        raise ValueError(f"step must be less than total={total}, got {step}")
    fraction("pct_start", pct_start)
    initial = _positive("max_lr", max_lr) / _positive("div_factor", div_factor)
    final = initial / _positive("final_div_factor", final_div_factor)
    peak = float(pct_start * total) - 1
    if step <= peak:
        start, end, p = initial, max_lr, step / peak
    else:
        start, end, p = max_lr, final, (step - peak) / (total - 1 - peak)
    return end + (start - end) * (1 + math.cos(math.pi * p)) / 2


@dataclass
class RangeTest:
    """What :func:`lr_range_test` measured: the learning rate of every step and its mini-batch loss."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)    # raw mini-batch losses (may end non-finite)
    smoothed: list[float] = field(default_factory=list)  # bias-corrected exponential average

    def best(self) -> float:
        """The learning rate at which the smoothed loss is lowest."""
        if not self.smoothed:
            raise ValueError("the range test recorded no finite loss")
        i = min(range(len(self.smoothed)), key=self.smoothed.__getitem__)
        return self.lrs[i]

    def suggestion(self, divisor: float = 10.0) -> float:
        """``best() / divisor``: back off from the bottom of the curve, where the loss is about
        to blow up, by a safety factor (10 by default, a common rule of thumb)."""
        return self.best() / _positive("divisor", divisor)


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
    trained in place: pass fresh ones and throw them away afterwards.
    """
    start, end = _positive("start", start), _positive("end", end)
    if end <= start:
        raise ValueError(f"end must be greater than start={start}, got {end}")
    positive_int("steps", steps, minimum=2)
    positive_int("batch_size", batch_size)
    fraction("smoothing", smoothing, open_low=False)
    _positive("stop_factor", stop_factor)
    result = RangeTest()
    average, best = 0.0, math.inf
    model.train()
    k = 0
    while k < steps:
        for x, y in batches(split, batch_size, generator=generator, drop_last=True):
            lr = start * (end / start) ** (k / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            value = float(loss.detach())
            result.lrs.append(lr)
            result.losses.append(value)
            if not math.isfinite(value):
                return result
            average = smoothing * average + (1 - smoothing) * value
            smooth = average / (1 - smoothing ** (k + 1))
            result.smoothed.append(smooth)
            best = min(best, smooth)
            if smooth > stop_factor * best:
                return result
            loss.backward()
            optimizer.step()
            k += 1
            if k == steps:
                break
    return result
