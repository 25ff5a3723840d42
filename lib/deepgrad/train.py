"""A small, honest training loop: mini-batch steps, periodic evaluation, divergence detection.

:func:`fit` runs ``steps`` optimiser updates on the training part of a :class:`~deepgrad.data.Dataset`
and returns a :class:`History`. A run whose loss becomes non-finite (``nan``/``inf``) stops at once and
is marked diverged (``History.diverged_at``) instead of raising or printing warnings, so a chapter can
plot it as diverged and carry on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import non_negative, one_of, positive_int
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
        on_step: Callable[[int, float], None] | None = None,
        early_stopping: EarlyStopping | None = None) -> History:
    """Train ``model`` for ``steps`` mini-batch updates of ``optimizer`` on ``data.train``.

    Each step is the four steps of :ref:`chap-backprop`: forward, loss, backward, update. Batches
    are drawn epoch by epoch without replacement (``drop_last``, so every step sees ``batch_size``
    examples) from ``generator``. Every ``eval_every`` steps (default: ``steps // 20``, at least 1),
    and before the first step, the model is evaluated on ``data.val``. ``max_grad_norm``, if given,
    clips the global gradient norm before each update (``torch.nn.utils.clip_grad_norm_``).
    ``on_step(step, loss)`` is called after each update.

    If a step's loss is not finite the run stops before updating; ``History.diverged_at`` is that step.

    ``early_stopping``, an :class:`EarlyStopping`, is reset at the start and consulted after every
    evaluation but the initial one (evaluation ``k = 1, 2, ...`` is its epoch ``k - 1``), with the logs
    ``val_loss``, ``val_accuracy`` and ``loss`` (the mean training mini-batch loss since the previous
    evaluation). When it says stop, training ends there; its :meth:`EarlyStopping.finish` runs at
    the end of every run (restoring the best weights if it was asked to), diverged runs included.
    """
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    if batch_size > len(data.train):
        raise ValueError(f"batch_size must be at most the training set size {len(data.train)}, got {batch_size}")
    eval_every = max(1, steps // 20) if eval_every is None else eval_every
    positive_int("eval_every", eval_every)
    if max_grad_norm is not None:
        non_negative("max_grad_norm", max_grad_norm)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping must be None or an EarlyStopping, got {type(early_stopping).__name__}")
    history = History()

    def record_eval(step: int) -> None:
        loss, accuracy = evaluate(model, data.val, loss_fn)
        history.eval_steps.append(step)
        history.val_loss.append(loss)
        history.val_accuracy.append(accuracy)

    def stop_early(step: int) -> bool:
        if early_stopping is None:
            return False
        since = len(history.train_loss) - (step - history.eval_steps[-2])
        recent = history.train_loss[since:]
        logs = {"val_loss": history.val_loss[-1], "val_accuracy": history.val_accuracy[-1],
                "loss": sum(recent) / len(recent)}
        return early_stopping.update(len(history.eval_steps) - 2, logs, model)

    if early_stopping is not None:
        early_stopping.reset()
    model.train()
    record_eval(0)
    _train(model, data, optimizer, history, steps=steps, batch_size=batch_size, eval_every=eval_every,
           loss_fn=loss_fn, generator=generator, max_grad_norm=max_grad_norm, on_step=on_step,
           record_eval=record_eval, stop_early=stop_early)
    if early_stopping is not None:
        early_stopping.finish(model)
    return history


def _train(model, data, optimizer, history, *, steps, batch_size, eval_every, loss_fn, generator,
           max_grad_norm, on_step, record_eval, stop_early) -> None:
    """The update loop of :func:`fit` (split out so that early stopping can end it in one place)."""
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
                return
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            if on_step is not None:
                on_step(step, value)
            if step % eval_every == 0 or step == steps:
                record_eval(step)
                if stop_early(step):
                    return
            if step == steps:
                break


# --------------------------------------------------------------------------------------------
# Early stopping
# --------------------------------------------------------------------------------------------

#: Directions :class:`EarlyStopping` understands (``"auto"`` infers it from the monitored name).
MODES = ("auto", "min", "max")


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter and buffer of ``model`` (what Keras' ``get_weights`` keeps)."""
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


class EarlyStopping:
    """Stop training when a monitored quantity stops improving: Keras' ``EarlyStopping``, epoch by epoch.

    The rule, identical to ``keras.callbacks.EarlyStopping`` (Keras 3, checked against it by the tests):
    at the end of every epoch ``t >= start_from_epoch`` the counter ``wait`` grows by one; the
    monitored value ``v`` is an *improvement* if ``v - min_delta < best`` (mode ``"min"``) or
    ``v - min_delta > best`` (mode ``"max"``; ``min_delta`` is taken as ``-|min_delta|`` for ``"min"``,
    so an improvement must beat the best by more than ``|min_delta|``). An improvement becomes the new
    ``best`` (and, with ``restore_best_weights``, its weights are copied); ``wait`` is reset to 0
    only if the value also improves on ``baseline`` (when one is given). Otherwise training stops
    once ``wait >= patience`` and ``t > 0``. NaN is never an improvement, except as the very first
    value (``best`` starts empty, as in Keras). With ``restore_best_weights`` the weights of the best
    epoch are put back when training ends, *whether or not it stopped early* (Keras 3 does the same),
    and the weights of the first monitored epoch count as best until something improves on them.

    Use it epoch by epoch with :meth:`reset`, :meth:`update` (returns ``True`` to stop) and
    :meth:`finish`, or hand it to :func:`fit` (``early_stopping=``), which calls them at every
    evaluation (each evaluation after the start is one "epoch").

    Attributes after training: ``best`` (best monitored value), ``best_epoch``, ``stopped_epoch``
    (0 if training was not stopped, as in Keras), ``wait``, ``stop_training`` and ``epochs_seen``.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty metric name such as 'val_loss', got {monitor!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta):
            raise ValueError(f"min_delta must be a finite number, got {min_delta!r}")
        positive_int("patience", patience, minimum=0)
        one_of("mode", mode, MODES)
        if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, (int, float))):
            raise ValueError(f"baseline must be None or a number, got {baseline!r}")
        if not isinstance(restore_best_weights, bool):
            raise TypeError(f"restore_best_weights must be True or False, got {restore_best_weights!r}")
        positive_int("start_from_epoch", start_from_epoch, minimum=0)
        if mode == "auto":
            name = monitor.removeprefix("val_")
            if name == "loss" or name.endswith("loss"):
                mode = "min"
            elif name in ("accuracy", "acc"):
                mode = "max"
            else:
                raise ValueError(f"mode='auto' cannot tell whether {monitor!r} should go down or up; "
                                 "pass mode='min' or mode='max'")
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.patience = patience
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.reset()

    def reset(self) -> None:
        """Forget everything (Keras' ``on_train_begin``): the same object can serve several runs."""
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_weights: dict[str, Tensor] | None = None
        self.best_epoch = 0
        self.stop_training = False
        self.epochs_seen = 0

    def is_improvement(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` beats ``reference`` by more than ``min_delta`` (always, if no reference)."""
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def update(self, epoch: int, logs: dict[str, float], model: nn.Module | None = None) -> bool:
        """Record the end of epoch ``epoch`` (counted from 0) with metrics ``logs``; ``True`` means stop.

        ``model`` is needed only with ``restore_best_weights``, to copy its weights.
        """
        positive_int("epoch", epoch, minimum=0)
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which is not among the logged "
                           f"metrics {sorted(logs)}")
        if self.restore_best_weights and model is None:
            raise ValueError("restore_best_weights=True needs the model passed to update()")
        self.epochs_seen += 1
        current = float(logs[self.monitor])
        if epoch < self.start_from_epoch:
            return False
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _state_copy(model)
            self.best_epoch = epoch
        self.wait += 1
        if self.is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = _state_copy(model)
            if self.baseline is None or self.is_improvement(current, self.baseline):
                self.wait = 0
            return False
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.stop_training = True
        return self.stop_training

    def finish(self, model: nn.Module | None = None) -> None:
        """End of training (Keras' ``on_train_end``): put the best epoch's weights back, if asked to."""
        if self.restore_best_weights and self.best_weights is not None:
            if model is None:
                raise ValueError("restore_best_weights=True needs the model passed to finish()")
            model.load_state_dict(self.best_weights)


# --------------------------------------------------------------------------------------------
# Prechelt's stopping criteria
# --------------------------------------------------------------------------------------------

#: The three classes of stopping criteria of Prechelt (1998), "Early stopping - but when?".
CRITERIA = ("GL", "PQ", "UP")


def _finite_sequence(name: str, values: Sequence[float]) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def generalization_loss(val: Sequence[float]) -> list[float]:
    """Prechelt's generalisation loss, in percent, after every epoch.

    GL(t) = 100 · (E_va(t) / E_opt(t) − 1) with E_opt(t) = min over t' <= t of E_va(t'): how far the
    validation error has risen above the lowest seen so far (0 whenever it is at a new minimum).
    """
    val = _finite_sequence("val", val)
    out, best = [], math.inf
    for v in val:
        best = min(best, v)
        out.append(100.0 * (v / best - 1.0))
    return out


def training_progress(train: Sequence[float], k: int = 5) -> list[float | None]:
    """Prechelt's training progress P_k(t), in per mille, after every epoch (``None`` for t < k).

    P_k(t) = 1000 · (Σ_{t'=t−k+1..t} E_tr(t') / (k · min_{t'=t−k+1..t} E_tr(t')) − 1): how much larger the
    mean training error of the last strip of ``k`` epochs is than its minimum. Large while training
    still makes progress, near 0 once it has stalled.
    """
    train = _finite_sequence("train", train)
    positive_int("k", k)
    out: list[float | None] = []
    for t in range(len(train)):
        if t + 1 < k:
            out.append(None)
            continue
        strip = train[t - k + 1:t + 1]
        out.append(1000.0 * (sum(strip) / (k * min(strip)) - 1.0))
    return out


def prechelt_stop(criterion: str, threshold: float, val: Sequence[float],
                  train: Sequence[float] | None = None, *, k: int = 5) -> int | None:
    """The epoch after which Prechelt's criterion stops training (1-based), or ``None`` if it never does.

    ``val[i]`` and ``train[i]`` are the validation and training errors after epoch ``i + 1``. With
    strips of ``k`` epochs (end-of-strip epochs are t = k, 2k, ...):

    - ``"GL"``, GL_α: the first epoch with GL(t) > α (``threshold`` = α, in percent).
    - ``"PQ"``, PQ_α: the first end-of-strip epoch with GL(t) / P_k(t) > α (needs ``train``).
    - ``"UP"``, UP_s: the first end-of-strip epoch ending the ``s``-th successive strip over which the
      validation error rose, E_va(t) > E_va(t − k) (``threshold`` = s, a positive int).
    """
    one_of("criterion", criterion, CRITERIA)
    val = _finite_sequence("val", val)
    positive_int("k", k)
    gl = generalization_loss(val)
    if criterion == "GL":
        non_negative("threshold", threshold)
        return next((t + 1 for t, g in enumerate(gl) if g > threshold), None)
    if criterion == "PQ":
        non_negative("threshold", threshold)
        if train is None or len(train) != len(val):
            raise ValueError("criterion 'PQ' needs train, the training errors of the same epochs as val")
        progress = training_progress(train, k)
        for t in range(k - 1, len(val), k):
            # a strip with no progress at all (P_k = 0) makes the quotient infinite once GL > 0
            quotient = gl[t] / progress[t] if progress[t] > 0 else (math.inf if gl[t] > 0 else 0.0)
            if quotient > threshold:
                return t + 1
        return None
    positive_int("threshold", threshold)
    rises = 0
    for t in range(2 * k - 1, len(val), k):
        rises = rises + 1 if val[t] > val[t - k] else 0
        if rises >= threshold:
            return t + 1
    return None
