"""Reproducibility: one call seeds every random number generator and pins the numerics.

Every chapter starts with ``dg.seed_everything(0)``. Two runs of a chapter then print
byte-identical text on the same machine, which is what the book's nbval tests check.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from deepgrad._checks import one_of, positive_int
from deepgrad.book import significant  # noqa: F401  (re-exported: it lived here before deepgrad.book)

#: Environment variable that overrides :func:`default_device` (``"cpu"`` or ``"cuda"``).
DEVICE_ENV = "DEEPGRAD_DEVICE"


def seed_everything(seed: int = 0, *, threads: int | None = 1, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch, and make PyTorch's kernels deterministic.

    Parameters
    ----------
    seed:
        Non-negative integer used for :mod:`random`, :mod:`numpy.random` and :mod:`torch`
        (CPU and every CUDA device).
    threads:
        Number of intra-op CPU threads for PyTorch. A fixed count keeps floating-point
        reductions in the same order from one machine to another. The default, one, is also
        the fastest for the book's small networks: a 64-unit layer is too little work to share,
        and a second thread mostly waits (measured: a digits MLP trains several times faster
        on one thread than on two when the machine's two cores are busy). ``None`` leaves
        PyTorch's choice alone.
    deterministic:
        If true, ``torch.use_deterministic_algorithms(True)``; on CUDA this also sets
        ``CUBLAS_WORKSPACE_CONFIG`` as cuBLAS requires and turns off cuDNN autotuning.

    Returns
    -------
    torch.Generator
        A CPU generator seeded with ``seed``, for code that wants its own stream
        (e.g. shuffling mini-batches) independent of the global one.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if threads is not None:
        positive_int("threads", threads)
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def default_device() -> torch.device:
    """The device chapters compute on: CUDA when present, else the CPU.

    Set the environment variable ``DEEPGRAD_DEVICE`` to ``cpu`` or ``cuda`` to override;
    the test suite sets ``cpu`` so that the recorded reference outputs, made on a CPU,
    are compared like with like.
    """
    choice = os.environ.get(DEVICE_ENV, "").strip().lower()
    if choice:
        one_of(DEVICE_ENV, choice, ["cpu", "cuda"])
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{DEVICE_ENV}=cuda but no CUDA device is available; use 'cpu'")
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
