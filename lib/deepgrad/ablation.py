"""Remedy-by-remedy ablation of a deep network that fails to train (the capstone chapter).

A :class:`Recipe` names one choice for each remedy the book covers: activation, initialisation,
normalisation, residual connections, optimiser and learning rate, gradient clipping and early
stopping. :func:`run` builds the network a recipe describes, diagnoses its gradients with a
:class:`~deepgrad.diagnostics.GradientReport` over the first steps, trains it with
:func:`~deepgrad.train.fit` and returns an :class:`Outcome` with everything an ablation table needs.
:func:`greedy_layerwise` trains a network one hidden layer at a time (Bengio et al., 2007), the
"multi-level hierarchy" remedy of the notes, on :func:`deepgrad.train.layerwise`. :func:`train` trains
without the diagnosis, and :class:`Pool` trains many (recipe, seed) pairs in worker processes, for
comparisons over seeds with :func:`deepgrad.evidence.from_values`.

Nothing here touches the global random number generators: every function takes a ``seed`` and draws
from its own ``torch.Generator`` (weights are initialised under ``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepgrad import activations, evidence, propagation, tables
from deepgrad import init as init_
from deepgrad._checks import fraction, one_of, positive, positive_int
from deepgrad.book import scientific
from deepgrad.data import Dataset
from deepgrad.diagnostics import GradientReport
from deepgrad.evidence import Comparison
from deepgrad.models import MLP, NORMS
from deepgrad.train import EarlyStopping, History, evaluate, fit, layerwise
from deepgrad.workers import Runs

#: Initialisations a recipe can name: small Gaussian weights N(0, NAIVE_STD²) (the "naive" choice of
#: old tutorials), PyTorch's default for ``nn.Linear``, Glorot & Bengio's normal, He et al.'s normal, and
#: the critical scale of the recipe's activation (see :func:`initializer`).
INITS = ("naive", "default", "xavier", "he", "critical")
OPTIMIZERS = ("sgd", "adam")
NAIVE_STD = 0.01


@dataclass(frozen=True)
class Recipe:
    """One choice per remedy. The defaults are the failing network: sigmoid, naive init, plain SGD."""

    activation: str = "sigmoid"
    init: str = "naive"
    norm: str | None = None
    residual: bool = False
    optimizer: str = "sgd"
    lr: float = 0.1
    clip: float | None = None
    early_stopping: bool = False

    def __post_init__(self):
        activations.get(self.activation)
        one_of("init", self.init, INITS)
        one_of("norm", self.norm, NORMS)
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        positive("lr", self.lr)
        if self.clip is not None:
            positive("clip", self.clip)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's text: the dataclass's repr, wrapped at 76 columns."""
        printer.text(textwrap.fill(repr(self), 76))

    def _repr_html_(self) -> str:
        """The recipe as a two-column HTML table, one row per choice."""
        rows = [[f.name, repr(getattr(self, f.name))] for f in dataclasses.fields(self)]
        return tables.html_table(["choice", "value"], rows, caption="Recipe")

    def but(self, **changes) -> Recipe:
        """A copy with some choices changed: ``naive.but(activation="relu")``."""
        return dataclasses.replace(self, **changes)


def initializer(name: str, activation: str | None = None) -> Callable[[nn.Linear], None] | None:
    """The function :class:`~deepgrad.models.MLP` applies to every linear layer (``None``: PyTorch's default).

    Biases are zero for every scheme but ``"default"``, which keeps PyTorch's uniform biases.

    ``"critical"`` needs ``activation`` (the other schemes ignore it) and draws weights N(0, σ_w²/fan_in)
    with σ_w² = :func:`deepgrad.propagation.critical_weight_variance` of the activation, the solution of
    χ(q*) = σ_w² E[φ'(z)²] = 1, z ~ N(0, q*), where q* is the fixed point of the forward variance: the
    factor by which each layer multiplies the mean squared back-propagated gradient is then one, the
    edge between vanishing and exploding (Poole et al., 2016; Schoenholz et al., 2017). σ_w² is 2 for
    ReLU (He et al.'s scale, the same distribution as ``"he"``), 1 for tanh and about 103 for the
    sigmoid (σ_w ≈ 10, ten times Glorot's σ_w = 1 at equal fans). It is applied to the output layer
    too, like every scheme here.
    """
    one_of("init", name, INITS)
    weight_var = None
    if name == "critical":
        if activation is None:
            raise ValueError("init 'critical' needs the activation (activation=None given)")
        weight_var = propagation.critical_weight_variance(activation)
    if name == "default":
        return None

    def init(layer: nn.Linear) -> None:
        if name == "naive":
            init_.normal_(layer.weight, NAIVE_STD)
        elif name == "xavier":
            init_.xavier_normal_(layer.weight)
        elif name == "critical":
            init_.normal_(layer.weight, (weight_var / layer.in_features) ** 0.5)
        else:
            init_.he_normal_(layer.weight)
        if layer.bias is not None:
            init_.zeros_(layer.bias)

    return init


def build(recipe: Recipe, data: Dataset, *, depth: int, width: int, seed: int = 0) -> MLP:
    """The network ``recipe`` describes, on ``data``'s device: its weights drawn from ``torch.manual_seed(seed)``
    inside ``torch.random.fork_rng``, so the global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP(data.n_features, data.n_classes, width=width, depth=depth, activation=recipe.activation,
                    init=initializer(recipe.init, recipe.activation), norm=recipe.norm, residual=recipe.residual)
    return model.to(data.train.x.device)


def optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (no momentum) or ``torch.optim.Adam`` at the recipe's learning rate."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr)


@dataclass
class Outcome:
    """What one recipe did.

    ``report`` is a :class:`GradientReport` over the first training steps of an identical network;
    ``verdict`` is its headline and ``gradient_ratio`` layer 1's back-propagated gradient relative to
    the report's reference layer (medians over those steps). ``test_accuracy`` is the trained model's
    (with early stopping: the restored best model's) accuracy on the test split, which no choice
    ever looked at; ``seed`` drew the weights and the batches. :func:`train` and :class:`Pool` leave
    ``report`` as ``None`` (no diagnosis); :func:`with_report` adds one.
    """

    recipe: Recipe
    history: History
    report: GradientReport | None
    test_accuracy: float
    model: nn.Module | None
    seed: int = 0

    @property
    def verdict(self) -> str:
        return self.report.verdict.headline

    @property
    def gradient_ratio(self) -> float:
        return self.report.layers[0].relative_grad

    @property
    def steps(self) -> int:
        """Steps made (fewer than asked for if early stopping ended the run or it diverged)."""
        return self.history.steps

    def steps_to(self, accuracy: float) -> int | None:
        """The first evaluation step at which validation accuracy reached ``accuracy`` (None: never)."""
        for step, value in zip(self.history.eval_steps, self.history.val_accuracy, strict=True):
            if value >= accuracy:
                return step
        return None

    def censored_steps_to(self, accuracy: float, *, steps: int, eval_every: int) -> float:
        """:meth:`steps_to` as a number for :mod:`deepgrad.evidence`: a run that never got there in its
        budget of ``steps`` updates counts as ``steps + eval_every`` ("later than the budget"), a
        diverged one as ``inf`` (a failure)."""
        reached = self.steps_to(accuracy)
        if reached is not None:
            return float(reached)
        return float("inf") if self.history.diverged else float(steps + eval_every)


def fastest(outcomes: Sequence[Outcome], *, target: float, steps: int, eval_every: int) -> int:
    """The index of the outcome that reached a validation accuracy of ``target`` in the fewest updates.

    The tuning criterion of the capstone, fixed before any run: fewest updates to ``target``
    (:meth:`Outcome.censored_steps_to`: a run that never gets there ranks after every run that does,
    a diverged one last), ties broken by the higher final validation accuracy, then by the lower
    learning rate. Pass the runs of one recipe at several rates to pick its rate.
    """
    fraction("target", target, open_high=False)
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("outcomes must hold at least one Outcome, got none")

    def key(i: int) -> tuple[float, float, float]:
        out = outcomes[i]
        final = out.history.val_accuracy[-1] if out.history.val_accuracy else float("nan")
        final = final if math.isfinite(final) else -math.inf
        return (out.censored_steps_to(target, steps=steps, eval_every=eval_every), -final, out.recipe.lr)

    return min(range(len(outcomes)), key=key)


def diagnose(recipe: Recipe, data: Dataset, *, depth: int, width: int, steps: int = 20, seed: int = 0,
             batch_size: int = 64) -> GradientReport:
    """A :class:`GradientReport` over the first ``steps`` updates of the network ``recipe`` describes."""
    positive_int("steps", steps)
    model = build(recipe, data, depth=depth, width=width, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with GradientReport(model, every=1) as report:
        fit(model, data, optimizer(recipe, model), steps=steps, batch_size=batch_size, eval_every=steps,
            generator=generator, max_grad_norm=recipe.clip)
    return report


def train(recipe: Recipe, data: Dataset, seed: int = 0, *, depth: int, width: int, steps: int,
          batch_size: int = 64, eval_every: int | None = None, patience: int = 3) -> Outcome:
    """Train the network of ``recipe`` for ``steps`` updates, without a diagnosis (``report`` is ``None``).

    The network is built and its batches drawn from ``seed``. With ``recipe.early_stopping`` the run
    monitors validation loss at every evaluation, stops after ``patience`` evaluations without
    improvement and restores the best weights.
    """
    positive_int("steps", steps)
    model = build(recipe, data, depth=depth, width=width, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    stopper = (EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
               if recipe.early_stopping else None)
    history = fit(model, data, optimizer(recipe, model), steps=steps, batch_size=batch_size,
                  eval_every=eval_every, generator=generator, max_grad_norm=recipe.clip,
                  early_stopping=stopper)
    _, test_accuracy = evaluate(model, data.test)
    return Outcome(recipe, history, None, test_accuracy, model, seed)


def run(recipe: Recipe, data: Dataset, *, depth: int, width: int, steps: int, seed: int = 0,
        batch_size: int = 64, eval_every: int | None = None, diagnose_steps: int = 20,
        patience: int = 3) -> Outcome:
    """Diagnose (:func:`diagnose`), then :func:`train` the network of ``recipe``; see :class:`Outcome`."""
    positive_int("steps", steps)
    report = diagnose(recipe, data, depth=depth, width=width, steps=diagnose_steps, seed=seed,
                      batch_size=batch_size)
    outcome = train(recipe, data, seed, depth=depth, width=width, steps=steps, batch_size=batch_size,
                    eval_every=eval_every, patience=patience)
    return dataclasses.replace(outcome, report=report)


def with_report(outcome: Outcome, data: Dataset, *, depth: int, width: int, steps: int = 20,
                batch_size: int = 64) -> Outcome:
    """``outcome`` with the :func:`diagnose` report of its recipe and seed over ``steps`` updates added."""
    report = diagnose(outcome.recipe, data, depth=depth, width=width, steps=steps, seed=outcome.seed,
                      batch_size=batch_size)
    return dataclasses.replace(outcome, report=report)


def _train_job(recipe: Recipe, seed: int, data: Dataset, settings: dict) -> Outcome:
    """:func:`train` one (recipe, seed) job: a module-level function, so that a worker process can run it."""
    return train(recipe, data, seed, **settings)


class Pool:
    """Trains many (recipe, seed) pairs on ``data`` with :func:`train`, in ``workers`` processes.

    ``pool(jobs, depth=..., width=..., steps=..., eval_every=...)`` returns one :class:`Outcome` per
    (recipe, seed) pair of ``jobs``, in order (``report`` ``None``; add one with :func:`with_report`).
    The jobs run through the library's one pool, :class:`deepgrad.workers.Runs` (each with one
    PyTorch thread, in processes started with ``'spawn'`` that share the parent's PyTorch settings),
    so the outcomes do not depend on ``workers``; the workers start at the first call and serve every
    later call until :meth:`close` or the end of a ``with`` block. Each job carries the data with it.
    Unlike :func:`deepgrad.evidence.compare`, which keeps one number per run, the whole outcome comes
    back (history, test accuracy, model), so one run per seed serves several measures; pair them with
    :func:`deepgrad.evidence.from_values`.
    """

    def __init__(self, data: Dataset, *, workers: int = 1):
        self.data = data
        self.workers = positive_int("workers", workers)
        self._runs = None

    def __call__(self, jobs: Iterable[tuple[Recipe, int]], *, depth: int, width: int, steps: int,
                 eval_every: int | None = None, batch_size: int = 64, patience: int = 3) -> list[Outcome]:
        for name, value in (("depth", depth), ("width", width), ("steps", steps), ("batch_size", batch_size),
                            ("patience", patience)):
            positive_int(name, value)
        if eval_every is not None:
            positive_int("eval_every", eval_every)
        settings = dict(depth=depth, width=width, steps=steps, eval_every=eval_every, batch_size=batch_size,
                        patience=patience)
        jobs = list(jobs)
        for i, job in enumerate(jobs):
            if not (isinstance(job, tuple) and len(job) == 2 and isinstance(job[0], Recipe)
                    and isinstance(job[1], int) and not isinstance(job[1], bool)):
                raise TypeError(f"jobs[{i}] must be a (Recipe, int seed) pair, got {job!r}")
        if self._runs is None:
            self._runs = Runs(self.workers, as_float=False)
        return self._runs([functools.partial(_train_job, recipe, seed, self.data, settings)
                           for recipe, seed in jobs])

    def close(self) -> None:
        """Stop the workers (a later call starts new ones)."""
        if self._runs is not None:
            self._runs.close()
            self._runs = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def greedy_layerwise(model: MLP, data: Dataset, *, steps_per_layer: int, lr: float, seed: int = 0,
                     batch_size: int = 64) -> list[float]:
    """Train ``model``'s hidden layers one at a time, bottom up (greedy layer-wise training).

    Stage k trains hidden layer k and a fresh linear head on top of it, with layers 1..k-1 frozen,
    for ``steps_per_layer`` SGD updates at learning rate ``lr``: each stage is a network with a single
    trainable hidden layer, so its gradient passes through one layer only (Bengio et al., 2007, in its
    supervised form; Hinton et al., 2006 pre-trained each layer without labels). The model's own output
    layer is then trained on top of the last hidden layer, the same way. Returns the validation accuracy
    after each stage (``depth + 1`` values; fewer if a stage diverged, which ends the training). Fine-tune
    the whole model afterwards with :func:`fit`. The stages' batches and fresh heads are drawn from one
    generator seeded with ``seed``.
    """
    positive_int("steps_per_layer", steps_per_layer)
    positive("lr", lr)
    generator = torch.Generator().manual_seed(seed)

    def stages():
        for k in range(1, model.depth + 2):
            if k <= model.depth:
                head = copy.deepcopy(model.output)
                init_.normal_(head.weight, 1.0 / model.output.in_features ** 0.5, generator=generator)
                init_.zeros_(head.bias)
                yield nn.Sequential(*model.hidden[:k], head), [*model.hidden[k - 1].parameters(), *head.parameters()]
            else:
                yield nn.Sequential(*model.hidden, model.output), list(model.output.parameters())

    def train_stage(stage: nn.Module, trainable: list[torch.Tensor]) -> History:
        history = fit(stage, data, torch.optim.SGD(trainable, lr=lr), steps=steps_per_layer,
                      batch_size=batch_size, eval_every=steps_per_layer, generator=generator)
        history.log("stage_accuracy", evaluate(stage, data.val)[1])
        return history

    return [h.logs["stage_accuracy"][0] for h in layerwise(stages(), train_stage)]


def markdown_table(outcomes: dict[str, Outcome], *, target: float) -> str:
    """An ablation table in Markdown, one row per named outcome.

    Columns: test accuracy (%), the step at which validation accuracy first reached ``target``
    ("never" if it did not; "diverged" if the run stopped on a non-finite loss), layer 1's
    back-propagated gradient δ relative to the reference layer (the last hidden layer, see
    :func:`deepgrad.diagnostics.reference_layer`) over the first steps, and the gradient
    report's verdict.
    """

    fraction("target", target, open_high=False)
    lines = [f"| network | test accuracy | steps to {100 * target:.0f}% | δ¹ / δ at last hidden layer | verdict |",
             "|---|---:|---:|---:|---|"]
    for name, out in outcomes.items():
        reached = out.steps_to(target)
        steps = "diverged" if out.history.diverged else ("never" if reached is None else str(reached))
        lines.append(f"| {name} | {100 * out.test_accuracy:.1f}% | {steps} | "
                     f"{scientific(out.gradient_ratio, 2)} | {out.verdict} |")
    return "\n".join(lines)


def consecutive(rungs: dict[str, Sequence[Outcome]], *, target: float, steps: int,
                eval_every: int) -> dict[str, tuple[Comparison, Comparison]]:
    """Each rung of a ladder against the rung before it, over the seeds both ran.

    ``rungs`` maps a name to the outcomes of one recipe on seeds s₁..sₙ (the same seeds, in the same
    order, for every rung). For every rung after the first, the value is a pair of paired
    comparisons (:func:`deepgrad.evidence.from_values`) of that rung (A) against the one before (B):
    updates to a validation accuracy of ``target`` (lower is better; censored as in
    :meth:`Outcome.censored_steps_to`), and test accuracy (higher is better).
    """
    fraction("target", target, open_high=False)
    names = list(rungs)
    seeds = [[out.seed for out in rungs[name]] for name in names]
    if any(s != seeds[0] for s in seeds):
        raise ValueError(f"rungs must hold outcomes on the same seeds in the same order, got {seeds}")
    result = {}
    for before, name in zip(names[:-1], names[1:], strict=True):
        pair = (name, before)
        speed = [[out.censored_steps_to(target, steps=steps, eval_every=eval_every) for out in rungs[n]]
                 for n in pair]
        accuracy = [[out.test_accuracy for out in rungs[n]] for n in pair]
        result[name] = (evidence.from_values(*speed, seeds=seeds[0], better="lower", names=pair),
                        evidence.from_values(*accuracy, seeds=seeds[0], better="higher", names=pair))
    return result


def consecutive_table(rungs: dict[str, Sequence[Outcome]], *, target: float, steps: int,
                      eval_every: int) -> str:
    """:func:`consecutive` as a Markdown table, one row per rung.

    Columns: the rung's learning rate; the median over seeds of the updates to ``target``; then, against
    the rung before, the seeds on which it got there in fewer updates (and in more), the mean difference in
    updates with its 95 % bootstrap interval and the sign-flip p; its mean test accuracy and the mean
    difference in test accuracy (percentage points) with its interval.
    """
    comparisons = consecutive(rungs, target=target, steps=steps, eval_every=eval_every)
    n = len(next(iter(rungs.values())))
    goal = f"{100 * target:.0f}%"
    lines = [f"| network | rate | steps to {goal} (median) | sooner / later than the row above (of {n} seeds) | "
             f"steps to {goal}, this row − the row above (95% interval) | p | test accuracy (mean) | "
             "test accuracy, this row − the row above, points (95% interval) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, outs in rungs.items():
        reached = [out.censored_steps_to(target, steps=steps, eval_every=eval_every) for out in outs]
        median = float(np.median(reached))
        cells = [name, f"{outs[0].recipe.lr:g}", "never" if median > steps else f"{median:g}"]
        if name in comparisons:
            speed, accuracy = comparisons[name]
            cells += [f"{speed.wins} / {speed.wins_b}", _with_interval(speed, 1, 0), f"{speed.sign_flip_p:.3g}"]
        else:
            cells += ["", "", ""]
        cells.append(f"{100 * float(np.mean([out.test_accuracy for out in outs])):.1f}%")
        cells.append(_with_interval(accuracy, 100, 1) if name in comparisons else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float, decimals: int) -> str:
    """``value`` with its sign (a true minus sign) and ``decimals`` decimals; ``0`` has no sign."""
    text = f"{value + 0.0:+.{decimals}f}"     # + 0.0 turns -0.0 into 0.0
    return "0" if float(text) == 0 else text.replace("-", "−")


def _with_interval(comparison: Comparison, scale: float, decimals: int) -> str:
    """The mean difference and its interval, times ``scale``: ``−59 (−110 to −29)``."""
    mean, low, high = (scale * x for x in (comparison.mean_difference, comparison.low, comparison.high))
    return f"{_signed(mean, decimals)} ({_signed(low, decimals)} to {_signed(high, decimals)})"


def steps_to_target(recipe: Recipe, data: Dataset, seed: int, *, depth: int, width: int, steps: int,
                    target: float, eval_every: int, batch_size: int = 64) -> float:
    """Updates until the validation accuracy of ``recipe``'s network first reaches ``target``, with ``seed``.

    The network is built and its batches drawn from ``seed`` (as in :func:`run`) and evaluated every
    ``eval_every`` updates, so the count is a multiple of ``eval_every``. A run that never reaches the
    target in ``steps`` updates counts as ``steps + eval_every`` (censored: "later than the budget"), and a
    diverged run as ``inf``, a failure in :func:`deepgrad.evidence.compare`. A module-level function of the
    seed once the other arguments are bound (``functools.partial``), so that seeds can run in worker
    processes.
    """
    fraction("target", target, open_high=False)
    positive_int("eval_every", eval_every)
    positive_int("steps", steps)
    outcome = train(recipe, data, seed, depth=depth, width=width, steps=steps, batch_size=batch_size,
                    eval_every=eval_every)
    return outcome.censored_steps_to(target, steps=steps, eval_every=eval_every)
