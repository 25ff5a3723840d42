"""A small, honest training loop: mini-batch steps, periodic evaluation, divergence detection.

:func:`fit` runs ``steps`` optimiser updates on the training part of a :class:`~deepgrad.data.Dataset`
and returns a :class:`History`. A run whose loss becomes non-finite (``nan``/``inf``) stops at once and
is marked diverged (``History.diverged_at``) instead of raising or printing warnings, so a chapter can
plot it as diverged and carry on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import non_negative, positive_int
from deepgrad.data import Dataset, Split, batches

Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass
class History:
    """What :func:`fit` measured. Steps are counted from 1 (the first update)."""

    train_loss: list[float] = field(default_factory=list)  # mini-batch loss of every step, before its update
    eval_steps: list[int] = field(default_factory=list)    # steps after which the model was evaluated (0 = start)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # first step whose loss was non-finite, if any

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def steps(self) -> int:
        """Number of updates made."""
        return len(self.train_loss) - (1 if self.diverged else 0)


def evaluate(model: nn.Module, split: Split, loss_fn: Loss = F.cross_entropy) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` on ``split``, in evaluation mode and without gradients.

    The model's training/evaluation mode is restored afterwards. A non-finite loss is returned as is.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(split.x)
            loss = float(loss_fn(logits, split.y))
            accuracy = float((logits.argmax(1) == split.y).double().mean())
    finally:
        model.train(was_training)
    return loss, accuracy


def fit(model: nn.Module, data: Dataset, optimizer: torch.optim.Optimizer, *, steps: int,
        batch_size: int = 64, eval_every: int | None = None, loss_fn: Loss = F.cross_entropy,
        generator: torch.Generator | None = None, max_grad_norm: float | None = None,
        on_step: Callable[[int, float], None] | None = None) -> History:
    """Train ``model`` for ``steps`` mini-batch updates of ``optimizer`` on ``data.train``.

    Each step is the four steps of :ref:`chap-backprop`: forward, loss, backward, update. Batches
    are drawn epoch by epoch without replacement (``drop_last``, so every step sees ``batch_size``
    examples) from ``generator``. Every ``eval_every`` steps (default: ``steps // 20``, at least 1),
    and before the first step, the model is evaluated on ``data.val``. ``max_grad_norm``, if given,
    clips the global gradient norm before each update (``torch.nn.utils.clip_grad_norm_``).
    ``on_step(step, loss)`` is called after each update.

    If a step's loss is not finite the run stops before updating; ``History.diverged_at`` is that step.
    """
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    if batch_size > len(data.train):
        raise ValueError(f"batch_size must be at most the training set size {len(data.train)}, got {batch_size}")
    eval_every = max(1, steps // 20) if eval_every is None else eval_every
    positive_int("eval_every", eval_every)
    if max_grad_norm is not None:
        non_negative("max_grad_norm", max_grad_norm)
    history = History()

    def record_eval(step: int) -> None:
        loss, accuracy = evaluate(model, data.val, loss_fn)
        history.eval_steps.append(step)
        history.val_loss.append(loss)
        history.val_accuracy.append(accuracy)

    model.train()
    record_eval(0)
    step = 0
    while step < steps:
        for x, y in batches(data.train, batch_size, generator=generator, drop_last=True):
            step += 1
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            value = float(loss.detach())
            history.train_loss.append(value)
            if not math.isfinite(value):
                history.diverged_at = step
                return history
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if on_step is not None:
                on_step(step, value)
            if step % eval_every == 0 or step == steps:
                record_eval(step)
            if step == steps:
                break
    return history
