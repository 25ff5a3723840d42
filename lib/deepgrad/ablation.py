"""Remedy-by-remedy ablation of a deep network that fails to train (the capstone chapter).

A :class:`Recipe` names one choice for each remedy the book covers: activation, initialisation,
normalisation, residual connections, optimiser and learning rate, gradient clipping and early
stopping. :func:`run` builds the network a recipe describes, diagnoses its gradients with a
:class:`~deepgrad.diagnostics.GradientReport` over the first steps, trains it with
:func:`~deepgrad.train.fit` and returns an :class:`Outcome` with everything an ablation table needs.
:func:`greedy_layerwise` trains a network one hidden layer at a time (Bengio et al., 2007), the
"multi-level hierarchy" remedy of the notes, on :func:`deepgrad.train.layerwise`.

Nothing here touches the global random number generators: every function takes a ``seed`` and draws
from its own ``torch.Generator`` (weights are initialised under ``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepgrad import activations, tables
from deepgrad import init as init_
from deepgrad._checks import fraction, one_of, positive, positive_int
from deepgrad.book import scientific
from deepgrad.data import Dataset
from deepgrad.diagnostics import GradientReport
from deepgrad.models import MLP, NORMS
from deepgrad.train import EarlyStopping, History, evaluate, fit, layerwise

#: Initialisations a recipe can name: small Gaussian weights N(0, NAIVE_STD²) (the "naive" choice of
#: old tutorials), PyTorch's default for ``nn.Linear``, Glorot & Bengio's normal, He et al.'s normal.
INITS = ("naive", "default", "xavier", "he")
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


def initializer(name: str) -> Callable[[nn.Linear], None] | None:
    """The function :class:`~deepgrad.models.MLP` applies to every linear layer (``None``: PyTorch's default).

    Biases are zero for every scheme but ``"default"``, which keeps PyTorch's uniform biases.
    """
    one_of("init", name, INITS)
    if name == "default":
        return None

    def init(layer: nn.Linear) -> None:
        if name == "naive":
            init_.normal_(layer.weight, NAIVE_STD)
        elif name == "xavier":
            init_.xavier_normal_(layer.weight)
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
                    init=initializer(recipe.init), norm=recipe.norm, residual=recipe.residual)
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
    ever looked at.
    """

    recipe: Recipe
    history: History
    report: GradientReport
    test_accuracy: float
    model: nn.Module

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


def run(recipe: Recipe, data: Dataset, *, depth: int, width: int, steps: int, seed: int = 0,
        batch_size: int = 64, eval_every: int | None = None, diagnose_steps: int = 20,
        patience: int = 3) -> Outcome:
    """Diagnose, then train the network of ``recipe`` for ``steps`` updates; see :class:`Outcome`.

    With ``recipe.early_stopping`` the run monitors validation loss at every evaluation, stops after
    ``patience`` evaluations without improvement and restores the best weights.
    """
    positive_int("steps", steps)
    report = diagnose(recipe, data, depth=depth, width=width, steps=diagnose_steps, seed=seed,
                              batch_size=batch_size)
    model = build(recipe, data, depth=depth, width=width, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    stopper = (EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
               if recipe.early_stopping else None)
    history = fit(model, data, optimizer(recipe, model), steps=steps, batch_size=batch_size,
                  eval_every=eval_every, generator=generator, max_grad_norm=recipe.clip,
                  early_stopping=stopper)
    _, test_accuracy = evaluate(model, data.test)
    return Outcome(recipe, history, report, test_accuracy, model)


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
    model = build(recipe, data, depth=depth, width=width, seed=seed)
    stopper = (EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
               if recipe.early_stopping else None)
    history = fit(model, data, optimizer(recipe, model), steps=steps, batch_size=batch_size,
                  eval_every=eval_every, generator=torch.Generator().manual_seed(seed),
                  max_grad_norm=recipe.clip, early_stopping=stopper)
    for step, value in zip(history.eval_steps, history.val_accuracy, strict=True):
        if value >= target:
            return float(step)
    return float("inf") if history.diverged else float(steps + eval_every)
