"""Independent runs in worker processes, and freed memory handed back to the operating system.

:class:`Runs` (and its one-batch form :func:`run_many`) runs independent calls, such as the seeds of
a comparison or the points of a learning-rate grid, in ``workers`` processes started with
``'spawn'``. Every call runs with one PyTorch thread, so its value does not depend on where it runs:
``workers=2`` gives exactly what ``workers=1`` gives. :func:`deepgrad.evidence.compare` runs its
seeds through it.

:func:`release_memory` asks the C library to hand back memory that the program has freed but the
allocator still holds. glibc's ``malloc`` keeps freed blocks in its heap for reuse and returns them to
the operating system only from the top of the heap, so after many short-lived tensors a process can
hold hundreds of megabytes it no longer uses; ``malloc_trim(0)`` releases every whole free page
(glibc manual, "Memory Allocation Tunables"; ``man 3 malloc_trim``). Elsewhere (macOS, Windows,
C libraries without it) it does nothing. The pool calls it in each worker after every call, in the
parent before it starts its workers, and after a batch run in-process, so that a chapter does not
have to.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import torch

from deepgrad._checks import positive_int

__all__ = ["Runs", "release_memory", "run_many"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the symbols already loaded in this process, or None without it."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, TypeError, AttributeError):  # no C library to open, or one without malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> bool:
    """Hand freed heap memory back to the operating system: glibc's ``malloc_trim(0)``.

    Returns True when the C library has ``malloc_trim`` (glibc) and it was called, False where it
    does not exist (macOS, Windows, musl), in which case nothing happens. Safe to call at any time:
    it only releases pages that hold no live allocation, so no value in the program changes.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _one_thread(call: Callable[[], float]) -> float:
    """``float(call())`` with one PyTorch thread, so that the value does not depend on where it runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        value = call()
    finally:
        torch.set_num_threads(threads)
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value)


def _in_worker(call: Callable[[], float]) -> float:
    """:func:`_one_thread` in a worker process, then its freed memory back to the system: a worker
    lives for many calls, and each call's tensors are garbage once its number is returned."""
    try:
        return _one_thread(call)
    finally:
        release_memory()


def check_sendable(name: str, call: Callable) -> None:
    """Raise :class:`ValueError` (naming ``name``) unless ``call`` can go to a worker process: a
    module-level function of an importable module, or a ``functools.partial`` of one, that pickles."""
    target = call
    while isinstance(target, functools.partial):  # the function it wraps is what the worker imports
        target = target.func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    problem = None
    if "<lambda>" in qualname or "<locals>" in qualname:
        problem = "a lambda or a function defined inside another function"
    elif module == "__main__":
        problem = "a function defined in the notebook or script itself (module '__main__')"
    else:
        try:
            pickle.dumps(call)
        except Exception as error:  # any pickling failure means the same thing here
            problem = f"an object that cannot be pickled ({error})"
    if problem:
        raise ValueError(f"{name} is {problem}: workers > 1 sends it to other processes, which needs a "
                         "module-level function from an importable module; define it there or use workers=1")


class Runs:
    """Runs independent calls, each with one PyTorch thread, in ``workers`` processes.

    With ``workers > 1`` the calls are module-level functions or ``functools.partial`` objects of
    them (such as :func:`deepgrad.normfree.final_loss`), so that they can be sent to worker processes
    started with ``'spawn'``; the values do not depend on ``workers``. One object serves several
    batches of calls (a grid, then the seeds at its best point), so the workers, which import PyTorch
    and load their data, start once. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, workers: int = 1):
        self.workers = positive_int("workers", workers)
        self._pool = None
        if workers > 1:
            release_memory()  # the workers are about to need memory: give back what this process freed
            self._pool = ProcessPoolExecutor(max_workers=workers,
                                             mp_context=multiprocessing.get_context("spawn"))

    def __call__(self, calls: Sequence[Callable[[], float]]) -> list[float]:
        """``[float(call()) for call in calls]``, spread over the workers (a tensor's ``.item()``)."""
        calls = list(calls)
        for i, call in enumerate(calls):
            if not callable(call):
                raise TypeError(f"calls[{i}] must be callable, got {type(call).__name__}")
        if self._pool is None:
            values = [_one_thread(call) for call in calls]
            release_memory()  # the batch's tensors are garbage now that its numbers are out
            return values
        for i, call in enumerate(calls):
            check_sendable(f"calls[{i}]", call)
        return list(self._pool.map(_in_worker, calls))

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_many(calls: Sequence[Callable[[], float]], workers: int = 1) -> list[float]:
    """``[float(call()) for call in calls]`` in ``workers`` processes (one batch of :class:`Runs`)."""
    with Runs(workers) as runs:
        return runs(calls)
