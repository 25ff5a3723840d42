"""deepgrad: the library behind the executable book on vanishing and exploding gradients.

Chapters import it as ``import deepgrad as dg``. Each module is one concept:

- :mod:`deepgrad.repro`       seeding, determinism, device choice
- :mod:`deepgrad.activations` activation functions by name, with derivatives and ranges (PReLU's slope is learned)
- :mod:`deepgrad.propagation` the mean-field variance recursion through random deep networks, and its measurement
- :mod:`deepgrad.data`        the bundled digits data set and small synthetic tasks
- :mod:`deepgrad.init`        weight initialisations from their formulas (Xavier, He, LeCun, orthogonal, PyTorch's)
- :mod:`deepgrad.normalization` batch norm forward and backward by hand, running statistics, layer norm, noisy BN
- :mod:`deepgrad.residual`    residual blocks (post-/pre-activation, plain, scaled shortcuts, ReZero), residual MLPs,
                              and MLPs whose width changes by stage (zero-padding or projection shortcuts)
- :mod:`deepgrad.models`      an MLP builder with depth, width, activation, init, norm, residual knobs; ``mlp_for``
- :mod:`deepgrad.autodiff`    backpropagation written out by hand, layer by layer
- :mod:`deepgrad.clipping`    gradient clipping by value and by global norm, Pascanu's one-unit cliff, recall runs
- :mod:`deepgrad.diagnostics` the vocabulary (δ, weight gradient, per-layer factor, saturated,
                              dead), the one hook recorder, the gradient-health report
- :mod:`deepgrad.transformer` a transformer encoder by hand (attention, layer norm, Post-/Pre-LN, DeepNorm,
                              ReZero) checked against PyTorch's; synthetic sequence tasks
- :mod:`deepgrad.recurrent`   the product through time, RNN/LSTM/GRU cells by hand, truncated BPTT (k1, k2), echo states
- :mod:`deepgrad.optim`       optimisers from their update equations (SGD to AdamW), 2-D test functions
- :mod:`deepgrad.schedules`   the learning-rate range test; step, cosine, warm-up, triangular and one-cycle schedules
- :mod:`deepgrad.tuning`      hyperparameter search with Optuna: seeded samplers, grid vs random, shared workers
- :mod:`deepgrad.ablation`    remedy-by-remedy ablation of a failing network; greedy layer-wise training
- :mod:`deepgrad.normfree`    residual nets without normalisation: SkipInit, ReZero, Fixup, adaptive gradient clipping
- :mod:`deepgrad.train`       the one training loop (callbacks: clipping, schedules, logging, early stopping), Prechelt
- :mod:`deepgrad.plotting`    the book's figure style and shared plotting helpers
- :mod:`deepgrad.explorer`    the interactive gradient-flow figure: measured and predicted δ profiles over a grid
- :mod:`deepgrad.tables`      HTML tables for rich outputs (the gradient report, recipes)
- :mod:`deepgrad.book`        numbers as the book prints them (significant digits, 8.9 × 10⁻⁸) and one ``glue``
- :mod:`deepgrad.evidence`    paired comparisons of two arms over seeds: wins, mean difference, bootstrap interval
- :mod:`deepgrad.precision`   float16/bfloat16 limits, simulated low-precision layers, δ underflow, loss scaling
- :mod:`deepgrad.workers`     independent runs in worker processes; freed memory handed back to the system

``import deepgrad`` does not import matplotlib, SciPy, scikit-learn or Optuna: ``plotting``, ``explorer``
and ``tuning`` are imported on first use, and scikit-learn when a data set is first made (the digits, the
stratified splits).
"""

from typing import TYPE_CHECKING

from deepgrad import (
    ablation,
    activations,
    autodiff,
    book,
    clipping,
    data,
    diagnostics,
    evidence,
    init,
    models,
    normalization,
    normfree,
    optim,
    precision,
    propagation,
    recurrent,
    repro,
    residual,
    schedules,
    tables,
    train,
    transformer,
    workers,
)
from deepgrad.book import glue, scientific, significant
from deepgrad.repro import default_device, seed_everything

if TYPE_CHECKING:  # editors and type checkers see the submodules imported on first use (_LAZY)
    from deepgrad import explorer, plotting, tuning

__all__ = [
    "ablation",
    "activations",
    "autodiff",
    "book",
    "clipping",
    "data",
    "diagnostics",
    "evidence",
    "explorer",
    "init",
    "models",
    "normalization",
    "normfree",
    "optim",
    "plotting",
    "precision",
    "propagation",
    "recurrent",
    "repro",
    "residual",
    "schedules",
    "tables",
    "train",
    "transformer",
    "tuning",
    "workers",
    "default_device",
    "seed_everything",
    "significant",
    "scientific",
    "glue",
]
__version__ = "0.1.0"


#: Submodules imported on first use (``dg.plotting``, ``from deepgrad import tuning``), not by
#: ``import deepgrad``: they import matplotlib (plotting, explorer) or Optuna (tuning), which a worker
#: process running a training job, or a chapter without figures, does not need.
_LAZY = ("explorer", "plotting", "tuning")


def __getattr__(name: str):
    # PEP 562: called only for names not found in the module, so each lazy submodule is imported once;
    # ``python -m deepgrad.tuning`` runs its worker without the package having imported it first.
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"deepgrad.{name}")
    raise AttributeError(f"module 'deepgrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
