"""Data the book trains on, with no download at run time.

- :func:`load_digits`: scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes),
  split once and for all into train / validation / test with a fixed seed.
- :func:`spirals`: interleaved noisy spirals, a small 2-D task that needs a deep-ish network.
- :func:`batches`: mini-batch iteration over a :class:`Split`.
- :func:`adding_problem`: sequences of (value, marker) pairs whose target is the sum of the two
  marked values (Hochreiter & Schmidhuber, 1997), a task with a long lag.
- :func:`delayed_copies`: a random signal and its copies delayed by 1, 2, ... steps, the memory
  task of echo state networks (Jaeger, 2001).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from deepgrad._checks import floating_dtype, fraction, non_negative, positive_int


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (n × features) and integer class labels ``y`` (n) of one part of a data set."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Dataset:
    """A classification data set in three fixed parts."""

    name: str
    train: Split
    val: Split
    test: Split
    n_features: int
    n_classes: int

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                       self.n_features, self.n_classes)


def _three_way_split(x: Tensor, y: Tensor, val_fraction: float, test_fraction: float, seed: int):
    """Stratified train/val/test split; the same ``seed`` always gives the same parts."""
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    from sklearn.model_selection import train_test_split  # scikit-learn is imported only when a split is made

    idx = torch.arange(len(y)).numpy()
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y.numpy(), random_state=seed)
    val_of_rest = val_fraction / (1 - test_fraction)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=y.numpy()[rest], random_state=seed)
    return [torch.as_tensor(part) for part in (train, val, test)]


def _standardise(x: Tensor, train_idx: Tensor) -> Tensor:
    """z-score every feature with the training part's mean and std (constant features left at 0)."""
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x - mean) / std



def _make_dataset(name: str, x: Tensor, y: Tensor, *, val_fraction: float, test_fraction: float,
                  seed: int, standardize: bool, dtype: torch.dtype, device) -> Dataset:
    floating_dtype("dtype", dtype)
    fraction("val_fraction", val_fraction)
    fraction("test_fraction", test_fraction)
    train_idx, val_idx, test_idx = _three_way_split(x, y, val_fraction, test_fraction, seed)
    x = x.to(torch.float64)
    if standardize:
        x = _standardise(x, train_idx)
    x = x.to(dtype)
    parts = [Split(x[i].to(device), y[i].to(device)) for i in (train_idx, val_idx, test_idx)]
    return Dataset(name, *parts, n_features=x.shape[1], n_classes=int(y.max()) + 1)


def load_digits(*, val_fraction: float = 0.2, test_fraction: float = 0.2, standardize: bool = True,
                seed: int = 0, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Dataset:
    """The 8×8 digits data set bundled with scikit-learn, as tensors.

    Pixel intensities (0–16) are z-scored per pixel using the training part's statistics when
    ``standardize`` is true (pixels that are constant on the training part stay 0). The split is
    stratified by class and fixed by ``seed``, independently of the global random state, so every
    chapter sees the same 1,077 / 360 / 360 images by default (checked by the tests). ``dtype`` must
    be a floating-point type: an integer one would truncate the z-scores, and raises ``ValueError``.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: ``import deepgrad`` stays light

    raw = sklearn_digits()
    x = torch.as_tensor(raw.data, dtype=torch.float64)
    y = torch.as_tensor(raw.target, dtype=torch.long)
    return _make_dataset("digits", x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                         seed=seed, standardize=standardize, dtype=dtype, device=device)


def spirals(n_per_class: int = 300, *, classes: int = 2, turns: float = 1.5, noise: float = 0.1,
            val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
            dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Dataset:
    """``classes`` interleaved spiral arms in the plane, each with ``n_per_class`` noisy points.

    Arm k is r ↦ r·(cos θ, sin θ) with θ = 2π·turns·r + 2πk/classes, r uniform in (0, 1],
    plus isotropic Gaussian noise of standard deviation ``noise``.
    """
    positive_int("n_per_class", n_per_class)
    positive_int("classes", classes, minimum=2)
    non_negative("noise", noise)
    non_negative("turns", turns)
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(classes, n_per_class, generator=g, dtype=torch.float64) * 0.95 + 0.05
    arm = torch.arange(classes, dtype=torch.float64)[:, None]
    theta = 2 * math.pi * turns * r + 2 * math.pi * arm / classes
    x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1).reshape(-1, 2)
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return _make_dataset("spirals", x, y, val_fraction=val_fraction, test_fraction=test_fraction,
                         seed=seed, standardize=False, dtype=dtype, device=device)


def batches(split: Split, batch_size: int, *, shuffle: bool = True,
            generator: torch.Generator | None = None, drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` mini-batches covering ``split`` once (one epoch).

    With ``shuffle`` the order is a permutation drawn from ``generator`` (the global torch
    generator when ``None``), so a seeded generator gives the same batches every run.
    """
    positive_int("batch_size", batch_size)
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.x.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], split.y[idx]


def adding_problem(n: int, length: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``n`` sequences of the adding problem, as inputs ``x`` (n × length × 2) and targets ``y`` (n).

    Channel 0 holds values drawn uniformly from [0, 1); channel 1 marks two positions with a 1, one
    drawn uniformly from the first half of the sequence and one from the second half (the variant of
    Le et al. 2015 and Arjovsky et al. 2016 of Hochreiter & Schmidhuber's task). The target is the sum
    of the two marked values. Predicting the constant 1 gives a mean squared error of 1/6, the
    baseline. A predictor that ignores the markers does best with the sum of the two halves' mean
    values, an error of (1/6)(1 - 2/length) for even ``length``: each marked value is then known
    only up to the spread of its half.
    """
    positive_int("n", n)
    positive_int("length", length, minimum=2)
    values = torch.rand(n, length, generator=generator, dtype=torch.float64)
    marks = torch.zeros(n, length, dtype=torch.float64)
    half, rows = length // 2, torch.arange(n)
    marks[rows, torch.randint(0, half, (n,), generator=generator)] = 1
    marks[rows, torch.randint(half, length, (n,), generator=generator)] = 1
    x = torch.stack([values, marks], dim=-1)
    return x.to(dtype), (values * marks).sum(1).to(dtype)


def delayed_copies(length: int, delays: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """A signal u_t uniform in [-1, 1) of ``length + delays`` steps, and its delayed copies.

    Returns ``u`` (length) and ``targets`` (length × delays) with ``targets[t, d - 1] = u_{t-d}``:
    the first ``delays`` steps of the signal are generated and dropped, so every target exists.
    """
    positive_int("length", length)
    positive_int("delays", delays)
    full = 2 * torch.rand(length + delays, generator=generator, dtype=torch.float64) - 1
    u = full[delays:]
    targets = torch.stack([full[delays - d:delays - d + length] for d in range(1, delays + 1)], dim=1)
    return u.to(dtype), targets.to(dtype)


def delayed_recall(batch: int, length: int, lag: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Inputs u_t ~ N(0, 1) and targets y_t = u_{t−lag}: repeat the input ``lag`` steps later.

    Shapes ``(batch, length, 1)``. Targets before step ``lag`` are 0 (they are not scored by
    :func:`deepgrad.clipping.recall_loss`). Predicting 0 everywhere scores 1, the variance of u: the
    baseline.
    """
    positive_int("batch", batch)
    positive_int("length", length, minimum=2)
    positive_int("lag", lag)
    if lag >= length:
        raise ValueError(f"lag must be smaller than length {length}, got {lag}")
    u = torch.randn(batch, length, 1, generator=generator, dtype=dtype)
    y = torch.zeros_like(u)
    y[:, lag:] = u[:, :-lag]
    return u.to(device), y.to(device)
