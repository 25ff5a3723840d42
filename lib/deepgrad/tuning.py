"""Hyperparameter search with Optuna: one objective, every search method, several worker processes.

- :func:`quiet_optuna` imports Optuna and makes it print nothing (log level WARNING, experimental-feature
  warnings off).
- :func:`tuning_task` is the small digits problem every search in the book solves, and
  :func:`train_config` trains one configuration on it, returning the validation error after each epoch.
- :class:`Objective` turns that into an Optuna objective (a trial suggests the hyperparameters of
  :func:`suggest`); it memoises configurations, counts the epochs it trains and can report to a pruner.
- :func:`make_sampler` builds grid, random, TPE, Gaussian-process, NSGA-II and CMA-ES samplers by name,
  seeded; :func:`best_so_far` is the running minimum that search curves plot.
- :func:`grid_vs_random` reproduces Bergstra & Bengio (2012) on a synthetic objective where one of two
  parameters matters.
- ``python -m deepgrad.tuning worker --storage URL --study NAME --trials N`` is one worker process of a
  study shared through an Optuna storage (an SQLite or journal file, or a PostgreSQL database).
"""

from __future__ import annotations

import argparse
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from deepgrad import init as dg_init
from deepgrad._checks import instance_of, non_negative, one_of, positive_int
from deepgrad.data import Dataset, Split, batches
from deepgrad.models import MLP
from deepgrad.train import Callback, History, OnStep, StopIfNonFinite, layerwise, loop, validation

#: Search methods :func:`make_sampler` knows.
SAMPLERS = ("grid", "random", "qmc", "tpe", "gp", "nsga2", "cmaes")
#: The search space of :func:`suggest`: integer and log-scaled ranges, and categorical choices.
SPACE = {
    "n_layers": (1, 4),
    "n_units": (8, 16, 32, 64, 128, 256),
    "lr": (1e-3, 1.0),
    "batch_size": (16, 32, 64, 128),
    "activation": ("relu", "tanh", "sigmoid"),
}
#: The names of the parameters a trial suggests (Optuna's names; width is searched as log2_units).
PARAMS = ("n_layers", "log2_units", "lr", "batch_size", "activation")
#: Validation error returned for a run whose loss became non-finite: a uniform guess's.
DIVERGED_ERROR = 0.9


def quiet_optuna():
    """Import Optuna and silence it; returns the ``optuna`` module.

    Optuna then logs warnings only, and issues no ``ExperimentalWarning`` (GPSampler, the Matplotlib
    plots). The import itself runs with tqdm's "IProgress not found" notice suppressed: in a
    Jupyter kernel without ipywidgets, ``tqdm.auto`` (imported by Optuna) prints it to stderr.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def tuning_task(data: Dataset, *, train_size: int = 512) -> Dataset:
    """The first ``train_size`` training images of ``data`` (same validation and test parts).

    A small training set keeps a trial well under a second, so that a search of dozens of trials
    fits in a chapter.
    """
    positive_int("train_size", train_size)
    if train_size > len(data.train):
        raise ValueError(f"train_size must be at most {len(data.train)}, got {train_size}")
    train = Split(data.train.x[:train_size], data.train.y[:train_size])
    return Dataset(f"{data.name}[:{train_size}]", train, data.val, data.test, data.n_features, data.n_classes)


def _log2_range(values) -> tuple[int, int]:
    return int(math.log2(values[0])), int(math.log2(values[-1]))


def suggest(trial) -> dict:
    """Ask ``trial`` for one configuration from :data:`SPACE`.

    Depth is an integer; width a power of two, searched through its exponent (``log2_units``: an
    integer with few values keeps the Gaussian-process sampler's search over it cheap); the learning
    rate is log-uniform; batch size and activation are categorical.
    """
    lo, hi = SPACE["lr"]
    return {
        "n_layers": trial.suggest_int("n_layers", *SPACE["n_layers"]),
        "n_units": 2 ** trial.suggest_int("log2_units", *_log2_range(SPACE["n_units"])),
        "lr": trial.suggest_float("lr", lo, hi, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(SPACE["batch_size"])),
        "activation": trial.suggest_categorical("activation", list(SPACE["activation"])),
    }


def build_model(config: dict, data: Dataset) -> MLP:
    """The MLP of ``config`` (``n_layers`` × ``n_units``, ``activation``) with the initialisation
    :func:`deepgrad.init.recommended` gives for that activation (PyTorch's default if none)."""
    activation = config["activation"]
    try:
        scheme, kwargs = dg_init.recommended(activation)
        initialise = dg_init.for_linear(scheme, **kwargs)
    except ValueError:
        initialise = None
    return MLP(data.n_features, data.n_classes, width=config["n_units"], depth=config["n_layers"],
               activation=activation, init=initialise)


@contextmanager
def _seeded(seed: int) -> Iterator[torch.Generator]:
    """Inside: the global generator seeded with ``seed`` (for weight initialisation), restored on exit
    (``torch.random.fork_rng``); yields a separate generator seeded with ``seed`` for the batches."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def _train_epochs(model, opt, data: Dataset, batch_sizes: Sequence[int], generator: torch.Generator,
                  callbacks: Sequence[Callback] = ()) -> History:
    """One :func:`deepgrad.train.loop` over one epoch per entry of ``batch_sizes`` (mini-batches drawn
    from ``generator``, ``drop_last``), evaluated on ``data.val`` at the end of every epoch."""
    ends = list(itertools.accumulate(len(data.train) // b for b in batch_sizes))
    epochs = (batches(data.train, b, generator=generator, drop_last=True) for b in batch_sizes)
    return loop(model, itertools.chain.from_iterable(epochs), opt, callbacks=callbacks,
                evaluate=validation(data.val), eval_every=ends, eval_at_start=False)


def _errors(histories: Sequence[History], total: int) -> list[float]:
    """Validation error after every epoch (finite validation losses only), then :data:`DIVERGED_ERROR`
    for the epochs a diverged run did not reach, up to ``total``."""
    errors = [1.0 - a for h in histories for v, a in zip(h.val_loss, h.val_accuracy, strict=True)
              if math.isfinite(v)]
    return errors + [DIVERGED_ERROR] * (total - len(errors))


def train_config(config: dict, data: Dataset, *, epochs: int = 3, seed: int = 0,
                 momentum: float = 0.9) -> list[float]:
    """Train ``config`` with SGD (``momentum``) for ``epochs`` epochs; validation error after each.

    Deterministic: the weights and the batch order come from ``seed`` alone (the global generator is
    left alone). If the loss, or the validation loss, becomes non-finite the remaining epochs score
    :data:`DIVERGED_ERROR`.
    """
    positive_int("epochs", epochs)
    with _seeded(seed) as generator:
        model = build_model(config, data)
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=momentum)
        history = _train_epochs(model, opt, data, [config["batch_size"]] * epochs, generator,
                                [StopIfNonFinite("val_loss")])
    return _errors([history], epochs)


def train_schedule(config: dict, data: Dataset, *, batch_sizes: Sequence[int], cyclic: bool = False,
                   seed: int = 0, momentum: float = 0.9) -> list[float]:
    """Like :func:`train_config`, one epoch per entry of ``batch_sizes`` (a growing batch size, say).

    With ``cyclic`` the learning rate follows Smith's triangular cycle between ``lr / 10`` and ``lr``
    (``torch.optim.lr_scheduler.CyclicLR``, one cycle every two epochs of the first batch size).
    Returns the validation error after each epoch (:data:`DIVERGED_ERROR` once diverged).
    """
    if not batch_sizes:
        raise ValueError("batch_sizes must list at least one batch size (one per epoch)")
    for i, b in enumerate(batch_sizes):
        positive_int(f"batch_sizes[{i}]", b)
    with _seeded(seed) as generator:
        model = build_model(config, data)
        opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=momentum)
        callbacks = []
        if cyclic:
            per_epoch = len(data.train) // batch_sizes[0]
            schedule = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=config["lr"] / 10, max_lr=config["lr"],
                                                         step_size_up=per_epoch, cycle_momentum=False)
            callbacks.append(OnStep(lambda run: schedule.step()))
        history = _train_epochs(model, opt, data, batch_sizes, generator, callbacks)
    return _errors([history], len(batch_sizes))


def train_progressive(config: dict, data: Dataset, *, epochs_per_stage: int = 1, seed: int = 0,
                      momentum: float = 0.9) -> list[float]:
    """Progressive growth of depth: 1 hidden layer, then 2, ..., up to ``n_layers``.

    Greedy layer-wise training (:func:`deepgrad.train.layerwise`, the implementation that
    :func:`deepgrad.ablation.greedy_layerwise` uses too) in which each stage is a fresh network one
    layer deeper: it copies the hidden layers trained so far, which stay frozen, and only the new
    hidden layer and a fresh output layer learn, for ``epochs_per_stage`` epochs. Returns the
    validation error after every epoch of every stage (:data:`DIVERGED_ERROR` once diverged).
    """
    positive_int("epochs_per_stage", epochs_per_stage)
    total = config["n_layers"] * epochs_per_stage

    def stages():
        previous = None
        for depth in range(1, config["n_layers"] + 1):
            model = build_model({**config, "n_layers": depth}, data)
            frozen = set()
            if previous is not None:
                for layer, old in zip(model.hidden, previous.hidden, strict=False):
                    layer.load_state_dict(old.state_dict())
                    frozen |= {id(p) for p in layer.parameters()}
            yield model, [p for p in model.parameters() if id(p) not in frozen]
            previous = model

    with _seeded(seed) as generator:
        def train_stage(model, trainable):
            opt = torch.optim.SGD(trainable, lr=config["lr"], momentum=momentum)
            return _train_epochs(model, opt, data, [config["batch_size"]] * epochs_per_stage, generator)

        histories = layerwise(stages(), train_stage)
    return _errors(histories, total)


def _key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


@dataclass
class Objective:
    """An Optuna objective: the validation error of :func:`train_config` after ``epochs`` epochs.

    Training is deterministic, so a configuration seen before (by this or another search) is
    looked up instead of retrained: ``cache`` maps a configuration to its per-epoch errors and may be
    shared between objectives. ``epochs_trained`` counts the epochs *charged* to this objective's
    searches (cached or not), the budget a search really spends. With ``prune`` the error after
    each epoch is reported to the trial and the trial stops (``optuna.TrialPruned``) when its pruner
    says so; only the epochs up to that point are charged.
    """

    data: Dataset
    epochs: int = 3
    seed: int = 0
    prune: bool = False
    cache: dict = field(default_factory=dict)
    epochs_trained: int = 0
    trainings: int = 0

    def errors(self, config: dict) -> list[float]:
        """Per-epoch validation errors of ``config`` (trained once, then remembered)."""
        key = _key(config)
        if key not in self.cache:
            self.cache[key] = train_config(config, self.data, epochs=self.epochs, seed=self.seed)
            self.trainings += 1
        return self.cache[key]

    def __call__(self, trial) -> float:
        import optuna

        curve = self.errors(suggest(trial))
        for epoch, error in enumerate(curve, start=1):
            self.epochs_trained += 1
            if self.prune:
                trial.report(error, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return curve[-1]


def default_grid(n_trials: int) -> dict[str, list]:
    """A grid over :data:`SPACE` with at most ``n_trials`` points, values spread over each range.

    Keys are Optuna's parameter names (:data:`PARAMS`). Points go first to the learning rate, then to
    width, depth and batch size; the activation is
    fixed to ReLU once the budget cannot afford more (a grid must fix what it cannot afford to vary).
    """
    positive_int("n_trials", n_trials, minimum=2)
    lr = [1e-2, 1e-1] if n_trials < 24 else [3e-3, 3e-2, 3e-1]
    grid = {"lr": lr, "log2_units": [4, 7], "n_layers": [1, 3], "batch_size": [16, 64],
            "activation": ["relu"]}
    while math.prod(len(v) for v in grid.values()) > n_trials:
        for name in ("batch_size", "n_layers", "log2_units"):
            if len(grid[name]) > 1:
                grid[name] = grid[name][:1]
                break
    return grid


def make_sampler(name: str, seed: int, *, n_trials: int = 16, grid: dict | None = None,
                 n_startup_trials: int = 5):
    """A seeded Optuna sampler for search method ``name``, one of :data:`SAMPLERS`.

    ``"grid"``: ``GridSampler`` over ``grid`` (default :func:`default_grid` for ``n_trials``), points in
    an order drawn from ``seed``; ``"random"``: ``RandomSampler``; ``"tpe"``: Bergstra et al.'s
    tree-structured Parzen estimator; ``"qmc"``: quasi-random search, ``QMCSampler`` with a scrambled
    Halton sequence (the first trial, from which it reads the search space, is drawn at random; each
    categorical parameter takes one coordinate, cut into equal parts); ``"gp"``: Gaussian-process
    Bayesian optimisation; ``"nsga2"``:
    the NSGA-II genetic algorithm (population 6, so that a small budget sees several generations);
    ``"cmaes"``: CMA-ES (independent random sampling for categorical parameters, without warning).
    Model-based samplers start after ``n_startup_trials`` random trials.
    """
    import optuna

    one_of("name", name, SAMPLERS)
    positive_int("n_startup_trials", n_startup_trials)
    s = optuna.samplers
    if name == "grid":
        return s.GridSampler(grid or default_grid(n_trials), seed=seed)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():  # QMCSampler is an experimental feature of Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return s.QMCSampler(qmc_type="halton", scramble=True, seed=seed)
    if name == "tpe":
        return s.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if name == "nsga2":
        return s.NSGAIISampler(seed=seed, population_size=6)
    return s.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False)


def run_search(objective: Callable, sampler, n_trials: int, *, pruner=None, study_name: str | None = None):
    """Minimise ``objective`` for ``n_trials`` trials in an in-memory study; returns the study."""
    import optuna

    positive_int("n_trials", n_trials)
    quiet_optuna()
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner, study_name=study_name)
    study.optimize(objective, n_trials=n_trials)
    return study


def trial_values(study) -> list[float]:
    """Objective values of the study's trials in the order they ran (pruned or failed: ``nan``)."""
    import optuna

    return [t.value if t.state == optuna.trial.TrialState.COMPLETE else math.nan for t in study.trials]


def best_so_far(values: Sequence[float]) -> list[float]:
    """The running minimum, ``b_n = min(v_1, ..., v_n)``, ignoring ``nan`` (``nan`` until a number)."""
    out, best = [], math.inf
    for v in values:
        v = float(v)
        if not math.isnan(v):
            best = min(best, v)
        out.append(best if best < math.inf else math.nan)
    return out


# ----------------------------------------------------------------------------------------------
# Bergstra & Bengio (2012): grid against random search on a low effective dimension
# ----------------------------------------------------------------------------------------------

def low_dimensional_objective(x: np.ndarray, y: np.ndarray, x_star: float, *, width: float = 0.06,
                              weight: float = 0.02) -> np.ndarray:
    """A loss on the unit square that depends mostly on ``x``: a narrow well at ``x_star``.

    f(x, y) = 1 − exp(−(x − x*)² / (2 ω²)) + ν · (y − 1/2)², with ω = ``width`` and ν = ``weight``:
    ``y`` changes the loss by at most ν/4, so it hardly matters (Bergstra & Bengio's "low effective
    dimensionality").
    """
    non_negative("width", width)
    non_negative("weight", weight)
    return 1.0 - np.exp(-((x - x_star) ** 2) / (2 * width ** 2)) + weight * (y - 0.5) ** 2


def grid_points(per_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``per_axis`` × ``per_axis`` grid over the unit square, at the centres of equal cells."""
    positive_int("per_axis", per_axis)
    ticks = (np.arange(per_axis) + 0.5) / per_axis
    x, y = np.meshgrid(ticks, ticks, indexing="ij")
    return x.ravel(), y.ravel()


def grid_vs_random(per_axis: int = 3, repeats: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Best loss found by a grid and by random search of the same size, over random problems.

    Each repeat draws the important parameter's optimum ``x*`` uniformly, then evaluates
    :func:`low_dimensional_objective` on the ``per_axis``² grid points, on as many uniform random
    points, and on as many quasi-random points (a scrambled Halton sequence, drawn afresh for every
    repeat from a generator of its own, so that the other two arms do not depend on it). Returns the
    best loss of each method per repeat (``"grid"``, ``"random"``, ``"quasi-random"``).
    """
    from scipy.stats import qmc

    positive_int("repeats", repeats)
    rng = np.random.default_rng(seed)
    gx, gy = grid_points(per_axis)
    n = gx.size
    x_star = rng.uniform(0.0, 1.0, size=(repeats, 1))
    grid = low_dimensional_objective(gx[None, :], gy[None, :], x_star).min(axis=1)
    rx, ry = rng.uniform(size=(repeats, n)), rng.uniform(size=(repeats, n))
    random = low_dimensional_objective(rx, ry, x_star).min(axis=1)
    quasi_rng = np.random.default_rng([seed, 1])
    halton = np.stack([qmc.Halton(d=2, scramble=True, seed=quasi_rng).random(n) for _ in range(repeats)])
    quasi = low_dimensional_objective(halton[..., 0], halton[..., 1], x_star).min(axis=1)
    return {"grid": grid, "random": random, "quasi-random": quasi}


# ----------------------------------------------------------------------------------------------
# Worker processes sharing one study
# ----------------------------------------------------------------------------------------------

def open_storage(url: str):
    """An Optuna storage from ``url``: ``journal:PATH`` for a journal file (no server; safe for
    processes on one machine or a shared file system with working locks), anything else
    (``sqlite:///file.db``, ``postgresql://user@host:port/db``) as an SQLAlchemy database URL."""
    import optuna

    instance_of("storage", url, str, "a URL such as 'journal:study.log' or 'sqlite:///study.db'")
    if not url:
        raise ValueError(f"storage must be a URL such as 'journal:study.log' or 'sqlite:///study.db', got {url!r}")
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(url)


def quadratic(trial) -> float:
    """A cheap objective for the worker tests: (x − 2)² + (y + 1)² on [−5, 5]²."""
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", -5.0, 5.0)
    return (x - 2.0) ** 2 + (y + 1.0) ** 2


def digits_objective(trial) -> float:
    """The book's digits objective (:class:`Objective` on :func:`tuning_task`), for real workers."""
    from deepgrad.data import load_digits

    torch.set_num_threads(1)
    return Objective(tuning_task(load_digits()))(trial)


#: Objectives a worker can run, by name.
WORKER_OBJECTIVES = {"quadratic": quadratic, "digits": digits_objective}


def worker(storage: str, study: str, trials: int, *, objective: str = "quadratic", seed: int | None = None) -> int:
    """Run ``trials`` trials of ``study`` (created if missing) in ``storage``; returns how many ran here.

    Every worker pointed at the same storage and study name joins the same study: the storage hands
    out trial numbers and records results, so trials are neither lost nor duplicated.
    """
    import optuna

    positive_int("trials", trials)
    one_of("objective", objective, WORKER_OBJECTIVES)
    quiet_optuna()
    shared = optuna.create_study(study_name=study, storage=open_storage(storage), direction="minimize",
                                 sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    before = len(shared.trials)
    shared.optimize(WORKER_OBJECTIVES[objective], n_trials=trials)
    return len(shared.trials) - before


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m deepgrad.tuning worker --storage URL --study NAME --trials N``."""
    parser = argparse.ArgumentParser(prog="python -m deepgrad.tuning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("worker", help="run trials of a shared study")
    run.add_argument("--storage", required=True, help="journal:PATH, sqlite:///PATH or postgresql://...")
    run.add_argument("--study", required=True, help="study name (created if missing)")
    run.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    run.add_argument("--objective", default="quadratic", choices=sorted(WORKER_OBJECTIVES))
    run.add_argument("--seed", type=int, default=None, help="sampler seed (give each worker its own)")
    args = parser.parse_args(argv)
    worker(args.storage, args.study, args.trials, objective=args.objective, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def optuna_figure(plot: Callable, study, *, width: float = 7.5, height: float = 3.2, **kwargs):
    """Draw one of ``optuna.visualization.matplotlib``'s plots and return its Figure, sized for the book.

    Optuna's plotting functions switch Matplotlib to its "ggplot" style globally; the call runs
    inside ``matplotlib.rc_context`` so that the book's style is back afterwards.
    """
    import matplotlib as mpl

    quiet_optuna()
    with mpl.rc_context():
        drawn = plot(study, **kwargs)
    axes = drawn.flat[0] if isinstance(drawn, np.ndarray) else drawn
    fig = axes.figure
    fig.set_size_inches(width, height)
    return fig
