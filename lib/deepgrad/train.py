"""The library's one training loop, its callbacks, early stopping and Prechelt's stopping criteria.

:func:`loop` is the core: mini-batch steps (forward, loss, backward, update) with divergence detection
built in: a run whose loss becomes non-finite (``nan``/``inf``) stops at once and is marked diverged
(``History.diverged_at``) instead of raising or printing warnings, so a chapter can plot it as diverged
and carry on. Everything else is a :class:`Callback`: clipping (:class:`ClipGradNorm`,
:class:`ClipGradValue`), a learning-rate schedule (:class:`LearningRate`), gradient-norm logging
(:class:`GradNormLog`), per-step metrics (:class:`StepMetric`), early stopping (:class:`EarlyStop`),
stopping below a loss (:class:`StopBelow`). :func:`fit` runs the loop on a
:class:`~deepgrad.data.Dataset`; :func:`layerwise` trains a network stage by stage on it. Every other
trainer in the library (recurrent, clipping, schedules, tuning, ablation) is written on :func:`loop`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepgrad._checks import finite, instance_of, non_negative, number, one_of, positive_int
from deepgrad.data import Dataset, Split, batches

Loss = Callable[[Tensor, Tensor], Tensor]


#: ``step_loss(model, batch)``: the loss of one mini-batch, a tensor still attached to its graph.
StepLoss = Callable[[nn.Module, Any], Tensor]


def supervised(loss_fn: Loss = F.cross_entropy) -> StepLoss:
    """The usual step loss: ``loss_fn(model(x), y)`` for a mini-batch ``(x, y)``."""

    def step_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return loss_fn(model(x), y)

    return step_loss


@dataclass
class History:
    """What :func:`loop` (and so :func:`fit`) measured. Steps are counted from 1 (the first step).

    A step whose update a callback skipped (:attr:`Run.skip_update`: dynamic loss scaling after an
    inf/NaN gradient) counts in ``skipped``, not in ``updates``; :attr:`steps` counts both.

    ``logs`` holds the per-step or per-evaluation series that callbacks record, by name (the learning
    rate, gradient norms, ...); the fields hold what every run has.
    """

    train_loss: list[float] = field(default_factory=list)  # mini-batch loss of every step, before its update
    eval_steps: list[int] = field(default_factory=list)    # steps after which the model was evaluated (0 = start)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    diverged_at: int | None = None  # first step whose loss was non-finite, if any
    stopped_at: int | None = None   # step at which a callback ended the run (early stopping, solved, ...)
    updates: int | None = None      # optimiser updates applied (counted by the loop; skipped steps not)
    skipped: int = 0                # steps whose update a callback skipped (Run.skip_update)
    logs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def steps(self) -> int:
        """Number of steps completed: updates applied plus updates skipped (for a history built by
        hand: the recorded losses less a diverged one)."""
        if self.updates is not None:
            return self.updates + self.skipped
        return len(self.train_loss) - (1 if self.diverged else 0)

    def log(self, name: str, value: float) -> None:
        """Append ``value`` to the series ``logs[name]``."""
        self.logs.setdefault(name, []).append(float(value))


@dataclass
class Run:
    """The state of a run in progress, handed to every callback hook.

    ``step`` is the current step (from 1), ``loss`` its mini-batch loss (a tensor) and ``value`` that
    loss as a float. A callback ends the run by setting ``stop = True``, and skips this step's update
    by setting ``skip_update = True`` in ``after_backward`` (reset at the start of every step).
    ``after_step`` and ``on_eval`` can read ``skip_update`` to tell whether this step's update was
    applied: a learning-rate scheduler that should count updates is stepped only when it is false,
    ``OnStep(lambda run: run.skip_update or scheduler.step())``, or ``OnStep(..., updates_only=True)``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    step: int = 0
    batch: Any = None
    loss: Tensor | None = None
    value: float = math.nan
    stop: bool = False
    skip_update: bool = False


class Callback:
    """Hooks of :func:`loop`; override the ones you need. At every step, in this order:

    ``on_step_start`` (before the forward pass), ``after_loss`` (the loss is finite; setting
    ``run.stop`` here ends the run *before* the update), ``after_backward`` (gradients present, before
    the update: clipping, gradient logging; setting ``run.skip_update`` here skips the update),
    ``after_step`` (after the update, or where it would have been if skipped), then, when the model
    was evaluated, ``on_eval(run, metrics)``. ``on_train_start`` and ``on_train_end`` bracket the run;
    ``on_train_end`` runs for diverged and stopped runs too.
    """

    def on_train_start(self, run: Run) -> None: ...

    def on_step_start(self, run: Run) -> None: ...

    def after_loss(self, run: Run) -> None: ...

    def after_backward(self, run: Run) -> None: ...

    def after_step(self, run: Run) -> None: ...

    def on_eval(self, run: Run, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, run: Run) -> None: ...


def cycle(split: Split, batch_size: int, *,
          generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Mini-batches of ``split``, epoch after epoch without end (each epoch a fresh permutation drawn
    from ``generator`` when its first batch is asked for; ``drop_last``, so every batch is full)."""
    positive_int("batch_size", batch_size)
    if batch_size > len(split):
        raise ValueError(f"batch_size must be at most the training set size {len(split)}, got {batch_size}")

    def endless() -> Iterator[tuple[Tensor, Tensor]]:
        while True:
            yield from batches(split, batch_size, generator=generator, drop_last=True)

    return endless()


def loop(model: nn.Module, batches: Iterable[Any], optimizer: torch.optim.Optimizer, *,
         steps: int | None = None, step_loss: StepLoss | None = None, callbacks: Sequence[Callback] = (),
         evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
         eval_every: int | Iterable[int] | None = None, eval_at_start: bool = True,
         history: History | None = None) -> History:
    """The library's one training loop: ``steps`` steps (or until ``batches`` runs out).

    Each step is the four steps of :ref:`chap-backprop`: forward and loss
    (``step_loss(model, batch)``, default :func:`supervised` cross-entropy), backward, update, with the
    :class:`Callback` hooks in between. A step whose loss is not finite ends the run before its
    backward pass: ``History.diverged_at`` is that step; nothing is raised or printed. A step whose
    update a callback skipped (``run.skip_update``, set in ``after_backward``) makes no
    ``optimizer.step()`` and counts in ``History.skipped`` instead of ``History.updates``.

    ``evaluate(model)`` returns named metrics (``val_loss`` and ``val_accuracy`` go to the fields of
    :class:`History`, any other name to ``History.logs``); it runs before the first step (unless
    ``eval_at_start`` is false), every ``eval_every`` steps and after the last of ``steps``, or, when
    ``eval_every`` is a collection of steps (the ends of epochs of different lengths, say), after
    exactly those steps.
    Batches are drawn one at a time, and never one more than the run uses, so a shared random
    generator behind ``batches`` is left exactly where the run stopped. ``history``, an empty
    :class:`History` (or an instance of a subclass that adds views on it), is filled and returned.
    """
    if steps is not None:
        positive_int("steps", steps)
    callbacks = list(callbacks)
    for i, callback in enumerate(callbacks):
        instance_of(f"callbacks[{i}]", callback, Callback, "a deepgrad.train.Callback")
    eval_at: set[int] | None = None
    if evaluate is not None:
        if eval_every is None:
            if steps is None:
                raise ValueError("eval_every must be given with evaluate when steps is None")
            eval_every = max(1, steps // 20)
        if isinstance(eval_every, Iterable):
            eval_at = {positive_int("eval_every[i]", k) for k in eval_every}
        else:
            positive_int("eval_every", eval_every)
    step_loss = supervised() if step_loss is None else step_loss
    history = History() if history is None else instance_of("history", history, History, "a History")
    history.updates = history.updates or 0
    run = Run(model, optimizer, history)

    def record_eval() -> dict[str, float]:
        metrics = evaluate(model)
        history.eval_steps.append(run.step)
        for name, value in metrics.items():
            if name in ("val_loss", "val_accuracy"):
                getattr(history, name).append(float(value))
            else:
                history.log(name, value)
        return metrics

    for callback in callbacks:
        callback.on_train_start(run)
    model.train()
    if evaluate is not None and eval_at_start:
        record_eval()
    source = iter(batches)
    while steps is None or run.step < steps:
        try:
            run.batch = next(source)
        except StopIteration:
            break
        run.step += 1
        run.skip_update = False
        for callback in callbacks:
            callback.on_step_start(run)
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(model, run.batch)
        run.value = float(loss.detach())
        history.train_loss.append(run.value)
        if not math.isfinite(run.value):
            history.diverged_at = run.step
            break
        run.loss = loss
        for callback in callbacks:
            callback.after_loss(run)
        if run.stop:
            break
        loss.backward()
        for callback in callbacks:
            callback.after_backward(run)
        if run.skip_update:
            history.skipped += 1
        else:
            optimizer.step()
            history.updates += 1
        for callback in callbacks:
            callback.after_step(run)
        if evaluate is not None and (run.step in eval_at if eval_at is not None
                                     else run.step % eval_every == 0 or run.step == steps):
            metrics = record_eval()
            for callback in callbacks:
                callback.on_eval(run, metrics)
        if run.stop:
            break
    run.loss = run.batch = None  # let the last graph go
    if run.stop:
        history.stopped_at = run.step
    for callback in callbacks:
        callback.on_train_end(run)
    return history


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------

class OnStep(Callback):
    """Call ``function(run)`` after every step (to step a ``torch.optim.lr_scheduler``, say).

    By default it is called after every step, skipped or not, so a logger sees every loss and a
    scheduler counts steps, as :class:`LearningRate` does. With ``updates_only=True`` it is called
    only after the steps whose update was applied, passing over those a callback skipped
    (``run.skip_update``: :class:`deepgrad.precision.LossScaling` after an inf/NaN gradient), so a
    scheduler counts updates; PyTorch warns when a scheduler is stepped before the optimizer's first
    update, which is what happens when the first step is skipped::

        OnStep(lambda run: scheduler.step(), updates_only=True)
    """

    def __init__(self, function: Callable[[Run], None], *, updates_only: bool = False):
        self.function = function
        self.updates_only = instance_of("updates_only", updates_only, bool, "True or False")

    def after_step(self, run: Run) -> None:
        if not (self.updates_only and run.skip_update):
            self.function(run)


class ClipGradNorm(Callback):
    """Rescale the gradient to global norm at most ``max_norm`` before every update (Pascanu et al.
    2013): ``function(parameters, max_norm)``, by default ``torch.nn.utils.clip_grad_norm_``."""

    def __init__(self, max_norm: float, function: Callable | None = None):
        self.max_norm = non_negative("max_norm", max_norm, allow_inf=True)
        self.function = torch.nn.utils.clip_grad_norm_ if function is None else function

    def after_backward(self, run: Run) -> None:
        self.function(run.model.parameters(), self.max_norm)


class ClipGradValue(Callback):
    """Clip every gradient component into [−c, c] before every update: ``function(parameters, c)``,
    by default ``torch.nn.utils.clip_grad_value_``."""

    def __init__(self, clip_value: float, function: Callable | None = None):
        self.clip_value = non_negative("clip_value", clip_value, allow_inf=True)
        self.function = torch.nn.utils.clip_grad_value_ if function is None else function

    def after_backward(self, run: Run) -> None:
        self.function(run.model.parameters(), self.clip_value)


class LearningRate(Callback):
    """Set every parameter group's learning rate to ``schedule(k)`` before step ``k`` (k from 0, the
    first update), and log it as ``lr``."""

    def __init__(self, schedule: Callable[[int], float]):
        self.schedule = schedule

    def on_step_start(self, run: Run) -> None:
        lr = self.schedule(run.step - 1)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.history.log("lr", lr)


def global_grad_norm(model: nn.Module) -> float:
    """‖g‖₂ of all of ``model``'s gradients joined into one vector (the norm of the per-tensor norms)."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class GradNormLog(Callback):
    """Log ``function(model)`` (default :func:`global_grad_norm`) after every backward pass, before any
    clipping that comes later in the callback list, as ``name``. A diverged step, which has no
    gradient, logs ``nan``, so the series has one entry per step."""

    def __init__(self, name: str = "grad_norm", function: Callable[[nn.Module], float] | None = None):
        self.name = name
        self.function = global_grad_norm if function is None else function

    def after_backward(self, run: Run) -> None:
        run.history.log(self.name, self.function(run.model))

    def on_train_end(self, run: Run) -> None:
        if run.history.diverged:
            run.history.log(self.name, math.nan)


class StepMetric(Callback):
    """Log ``function(model)`` at the start of every step (before its update) as ``name``: a property of
    the weights, such as the spectral norm of a recurrent matrix."""

    def __init__(self, name: str, function: Callable[[nn.Module], float]):
        self.name, self.function = name, function

    def on_step_start(self, run: Run) -> None:
        run.history.log(self.name, self.function(run.model))


class StopBelow(Callback):
    """End the run at the first evaluation whose ``metric`` is below ``threshold`` (the task is solved;
    ``History.stopped_at`` is that step)."""

    def __init__(self, threshold: float, metric: str = "val_loss"):
        self.threshold = finite("threshold", threshold)
        self.metric = metric

    def on_eval(self, run: Run, metrics: dict[str, float]) -> None:
        if metrics[self.metric] < self.threshold:
            run.stop = True


class StopIfNonFinite(Callback):
    """End the run at the first evaluation whose ``metric`` is not finite (a diverged model can have a
    finite mini-batch loss and an infinite validation loss)."""

    def __init__(self, metric: str = "val_loss"):
        self.metric = metric

    def on_eval(self, run: Run, metrics: dict[str, float]) -> None:
        if not math.isfinite(metrics[self.metric]):
            run.stop = True


class EarlyStop(Callback):
    """Consult an :class:`EarlyStopping` at every evaluation but the initial one.

    Evaluation ``k = 1, 2, ...`` is its epoch ``k - 1``, with the logs ``val_loss``, ``val_accuracy``
    and ``loss`` (the mean training mini-batch loss since the previous evaluation). It is reset at the
    start and its :meth:`EarlyStopping.finish` runs at the end of every run, diverged runs included.
    """

    def __init__(self, stopper: EarlyStopping):
        instance_of("early_stopping", stopper, EarlyStopping, "an EarlyStopping")
        self.stopper = stopper

    def on_train_start(self, run: Run) -> None:
        self.stopper.reset()

    def on_eval(self, run: Run, metrics: dict[str, float]) -> None:
        h = run.history
        recent = h.train_loss[len(h.train_loss) - (run.step - h.eval_steps[-2]):]
        logs = {**metrics, "loss": sum(recent) / len(recent)}
        if self.stopper.update(len(h.eval_steps) - 2, logs, run.model):
            run.stop = True

    def on_train_end(self, run: Run) -> None:
        self.stopper.finish(run.model)


def layerwise(stages: Iterable[tuple[nn.Module, Sequence[Tensor]]],
              train_stage: Callable[[nn.Module, list[Tensor]], History]) -> list[History]:
    """Greedy layer-wise training (Bengio et al., 2007): train a network one stage at a time.

    ``stages`` yields ``(network, trainable)`` pairs, lazily (a stage may be built from the one before
    it, after that one is trained). For each, every parameter of ``network`` not in ``trainable`` is
    frozen (``requires_grad = False``), ``train_stage(network, trainable)`` trains it and returns its
    :class:`History`, and the frozen parameters are unfrozen. A diverged stage ends the training: the
    stages above it would be built on non-finite weights. Returns the histories of the stages trained.
    """
    histories = []
    for network, trainable in stages:
        trainable = list(trainable)
        frozen = [p for p in network.parameters() if p.requires_grad and all(p is not q for q in trainable)]
        for p in frozen:
            p.requires_grad_(False)
        try:
            history = train_stage(network, trainable)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        histories.append(history)
        if history.diverged:
            break
    return histories


# --------------------------------------------------------------------------------------------
# fit: the loop on a Dataset
# --------------------------------------------------------------------------------------------

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


def validation(split: Split, loss_fn: Loss = F.cross_entropy) -> Callable[[nn.Module], dict[str, float]]:
    """An ``evaluate`` for :func:`loop`: ``val_loss`` and ``val_accuracy`` of :func:`evaluate` on ``split``."""

    def metrics(model: nn.Module) -> dict[str, float]:
        loss, accuracy = evaluate(model, split, loss_fn)
        return {"val_loss": loss, "val_accuracy": accuracy}

    return metrics


def fit(model: nn.Module, data: Dataset, optimizer: torch.optim.Optimizer, *, steps: int,
        batch_size: int = 64, eval_every: int | None = None, loss_fn: Loss = F.cross_entropy,
        generator: torch.Generator | None = None, max_grad_norm: float | None = None,
        on_step: Callable[[int, float], None] | None = None,
        early_stopping: EarlyStopping | None = None, callbacks: Sequence[Callback] = ()) -> History:
    """Train ``model`` for ``steps`` mini-batch steps of ``optimizer`` on ``data.train`` (each an
    update, unless a callback skips it): :func:`loop` on a :class:`~deepgrad.data.Dataset`.

    Batches are drawn epoch by epoch without replacement (``drop_last``, so every step sees
    ``batch_size`` examples) from ``generator`` (:func:`cycle`). Every ``eval_every`` steps (default:
    ``steps // 20``, at least 1), and before the first step, the model is evaluated on ``data.val``.
    ``max_grad_norm``, if given, clips the global gradient norm before each update
    (:class:`ClipGradNorm`). ``on_step(step, loss)`` is called after each step.

    If a step's loss is not finite the run stops before updating; ``History.diverged_at`` is that step.

    ``early_stopping``, an :class:`EarlyStopping`, is consulted after every evaluation but the initial
    one (:class:`EarlyStop`); when it says stop, training ends there, and the best weights are put
    back at the end if it was asked to. ``callbacks`` come after these.
    """
    positive_int("steps", steps)
    source = cycle(data.train, batch_size, generator=generator)
    if eval_every is not None:
        positive_int("eval_every", eval_every)
    hooks: list[Callback] = []
    if max_grad_norm is not None:
        hooks.append(ClipGradNorm(non_negative("max_grad_norm", max_grad_norm)))
    if on_step is not None:
        hooks.append(OnStep(lambda run: on_step(run.step, run.value)))
    if early_stopping is not None:
        hooks.append(EarlyStop(early_stopping))
    return loop(model, source, optimizer, steps=steps,
                step_loss=supervised(loss_fn), callbacks=[*hooks, *callbacks],
                evaluate=validation(data.val, loss_fn), eval_every=eval_every)


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
        instance_of("monitor", monitor, str, "a metric name such as 'val_loss'")
        if not monitor:
            raise ValueError("monitor must be a non-empty metric name such as 'val_loss', got ''")
        finite("min_delta", min_delta)
        positive_int("patience", patience, minimum=0)
        one_of("mode", mode, MODES)
        if baseline is not None:
            number("baseline", baseline, "None or a number")
        instance_of("restore_best_weights", restore_best_weights, bool, "True or False")
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


def _errors(name: str, values: Sequence[float]) -> list[float]:
    """``values`` as floats, checked: a non-empty sequence of finite errors >= 0."""
    values = [non_negative(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _excess(value: float, reference: float) -> float:
    """value / reference − 1 for 0 <= reference <= value, with its limits at reference = 0.

    0 when both are 0 (a perfect error that stays perfect has not risen) and ``inf`` when only the
    reference is 0 (any rise above a perfect error is infinitely large relative to it: the limit of
    value / ε − 1 as ε → 0⁺).
    """
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return value / reference - 1.0


def generalization_loss(val: Sequence[float]) -> list[float]:
    """Prechelt's generalisation loss, in percent, after every epoch.

    GL(t) = 100 · (E_va(t) / E_opt(t) − 1) with E_opt(t) = min over t' <= t of E_va(t'): how far the
    validation error has risen above the lowest seen so far (0 whenever it is at a new minimum).
    Errors of exactly 0 (a perfect epoch) are legal: GL is 0 while the error stays 0 and ``inf`` once it
    rises above a minimum of 0 (the limit of the formula as E_opt → 0⁺).
    """
    val = _errors("val", val)
    out, best = [], math.inf
    for v in val:
        best = min(best, v)
        out.append(100.0 * _excess(v, best))
    return out


def training_progress(train: Sequence[float], k: int = 5) -> list[float | None]:
    """Prechelt's training progress P_k(t), in per mille, after every epoch (``None`` for t < k).

    P_k(t) = 1000 · (Σ_{t'=t−k+1..t} E_tr(t') / (k · min_{t'=t−k+1..t} E_tr(t')) − 1): how much larger the
    mean training error of the last strip of ``k`` epochs is than its minimum. Large while training
    still makes progress, near 0 once it has stalled. A strip whose minimum is 0 gives 0 if every error
    in it is 0 (nothing left to learn) and ``inf`` otherwise (the limit as the minimum → 0⁺).
    """
    train = _errors("train", train)
    positive_int("k", k)
    out: list[float | None] = []
    for t in range(len(train)):
        if t + 1 < k:
            out.append(None)
            continue
        strip = train[t - k + 1:t + 1]
        out.append(1000.0 * _excess(sum(strip), k * min(strip)))
    return out


def _quotient(gl: float, progress: float) -> float:
    """GL / P_k for the PQ criterion, with its limits: a strip with no progress at all (P_k = 0) makes it
    infinite once GL > 0 (0 while GL = 0); an infinite GL (a rise above a perfect validation error)
    makes it infinite whatever P_k is; an infinite P_k with a finite GL makes it 0."""
    if math.isinf(gl):
        return math.inf
    if progress == 0:
        return math.inf if gl > 0 else 0.0
    return gl / progress


def prechelt_stop(criterion: str, threshold: float, val: Sequence[float],
                  train: Sequence[float] | None = None, *, k: int = 5) -> int | None:
    """The epoch after which Prechelt's criterion stops training (1-based), or ``None`` if it never does.

    ``val[i]`` and ``train[i]`` are the validation and training errors after epoch ``i + 1``. With
    strips of ``k`` epochs (end-of-strip epochs are t = k, 2k, ...):

    - ``"GL"``, GL_α: the first epoch with GL(t) > α (``threshold`` = α, in percent).
    - ``"PQ"``, PQ_α: the first end-of-strip epoch with GL(t) / P_k(t) > α (needs ``train``).
    - ``"UP"``, UP_s: the first end-of-strip epoch ending the ``s``-th successive strip over which the
      validation error rose, E_va(t) > E_va(t − k) (``threshold`` = s, a positive int).

    Errors of 0 are legal; see :func:`generalization_loss` and :func:`training_progress` for the limits
    used there.
    """
    one_of("criterion", criterion, CRITERIA)
    val = _errors("val", val)
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
            if _quotient(gl[t], progress[t]) > threshold:
                return t + 1
        return None
    positive_int("threshold", threshold)
    rises = 0
    for t in range(2 * k - 1, len(val), k):
        rises = rises + 1 if val[t] > val[t - k] else 0
        if rises >= threshold:
            return t + 1
    return None
