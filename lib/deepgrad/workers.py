"""Independent runs in worker processes, and freed memory handed back to the operating system.

:class:`Runs` (and its one-batch form :func:`run_many`) runs independent calls, such as the seeds of
a comparison or the points of a learning-rate grid, in ``workers`` processes started with
``'spawn'``. Every call runs with one PyTorch thread, and each worker starts with the parent's
process-wide PyTorch settings (default dtype, deterministic algorithms, float32 matmul precision),
so on the CPU ``workers=2`` gives exactly what ``workers=1`` gives, provided each call seeds its
own random generators (a worker's global generator is not the parent's).
:func:`deepgrad.evidence.compare` runs its seeds through it, and :class:`deepgrad.ablation.Pool` its
training runs (``as_float=False``: whole outcomes come back, not numbers).

:func:`release_memory` asks the C library to hand back memory that the program has freed but the
allocator still holds. glibc's ``malloc`` keeps freed blocks in its heap for reuse and returns them to
the operating system only from the top of the heap, so after many short-lived tensors a process can
hold hundreds of megabytes it no longer uses; ``malloc_trim(0)`` releases every whole free page
(``malloc_trim(3)``, the Linux man page). Elsewhere (macOS, Windows, C libraries without it) it does
nothing. The pool calls it in each worker after every call, in the parent before it starts its
workers, and after a batch run in-process, so that a chapter does not have to.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from deepgrad._checks import positive_int

__all__ = ["Runs", "check_sendable", "release_memory", "run_many"]


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

    Where another allocator replaces glibc's (tcmalloc or jemalloc in ``LD_PRELOAD``, as on Colab),
    the program's memory is not in glibc's heap: the call still happens and returns True, but gives
    back little or nothing; that allocator returns memory by its own rules.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _one_thread(call: Callable[[], Any], as_float: bool = True) -> Any:
    """``float(call())`` (``call()`` itself unless ``as_float``) with one PyTorch thread, so that the
    value does not depend on where it runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        value = call()
    finally:
        torch.set_num_threads(threads)
    if not as_float:
        return value
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value)


def _settings() -> tuple:
    """This process's PyTorch settings that a spawned worker would otherwise not share."""
    return (torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_float32_matmul_precision())


def _start_worker(dtype: torch.dtype, deterministic: bool, warn_only: bool, matmul_precision: str) -> None:
    """A worker's start: the parent's :func:`_settings`, so that a call computes what it would in the parent."""
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_float32_matmul_precision(matmul_precision)


def _in_worker(call: Callable[[], Any], as_float: bool = True) -> Any:
    """:func:`_one_thread` in a worker process, then its freed memory back to the system: a worker
    lives for many calls, and each call's tensors are garbage once its value is returned."""
    try:
        return _one_thread(call, as_float)
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
    started with ``'spawn'``. Each worker starts with the parent's default dtype, deterministic-
    algorithms setting and float32 matmul precision as they are when the object is made; a call must
    seed its own random generators. Then, on the CPU, the values do not depend on ``workers``. One
    object serves several batches of calls (a grid, then the seeds at its best point), so the
    workers, which import PyTorch and load their data, start once. Use it as a context manager or
    call :meth:`close`; a closed object runs nothing (:class:`RuntimeError`).

    By default every value becomes a ``float`` (a tensor's ``.item()``); with ``as_float=False`` the
    values come back as the calls return them, any picklable object (a whole training outcome, say),
    so that one run can serve several measures.

    A call that raises stops its batch at once: the calls not yet started are cancelled, the pool is
    closed and the error is raised. A worker process that dies (out of memory, say) raises
    :class:`~concurrent.futures.process.BrokenProcessPool`.
    """

    def __init__(self, workers: int = 1, *, as_float: bool = True):
        self.workers = positive_int("workers", workers)
        if not isinstance(as_float, bool):
            raise TypeError(f"as_float must be True or False, got {type(as_float).__name__}")
        self.as_float = as_float
        self._pool = None
        self._closed = False
        if workers > 1:
            release_memory()  # the workers are about to need memory: give back what this process freed
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=_settings())

    def __call__(self, calls: Sequence[Callable[[], Any]]) -> list:
        """``[float(call()) for call in calls]`` (``call()`` unless ``as_float``), spread over the workers."""
        if self._closed:
            raise RuntimeError("this Runs is closed (close() was called or its with-block ended); "
                               "make a new one to run more calls")
        calls = list(calls)
        for i, call in enumerate(calls):
            if not callable(call):
                raise TypeError(f"calls[{i}] must be callable, got {type(call).__name__}")
        if self._pool is None:
            values = [_one_thread(call, self.as_float) for call in calls]
            release_memory()  # the batch's tensors are garbage now that its numbers are out
            return values
        for i, call in enumerate(calls):
            check_sendable(f"calls[{i}]", call)
        futures = [self._pool.submit(_in_worker, call, self.as_float) for call in calls]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)  # a failing call ends the batch at once
            for future in futures:  # the first failure, without waiting for earlier calls still running
                if future in done and future.exception() is not None:
                    future.result()
            return [future.result() for future in futures]
        except BrokenProcessPool as error:
            self._abandon()
            raise BrokenProcessPool("a worker process died, perhaps out of memory; use workers=1 "
                                    "(or fewer workers)") from error
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Close without waiting: cancel the calls not started; a running one ends in its worker."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the workers (after the calls already sent to them)."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Runs:
        return self

    def __exit__(self, error_type, *exc) -> None:
        if error_type is None:
            self.close()
        else:  # leaving on an error: do not wait for calls whose results nobody will read
            self._abandon()


def run_many(calls: Sequence[Callable[[], float]], workers: int = 1) -> list[float]:
    """``[float(call()) for call in calls]`` in ``workers`` processes (one batch of :class:`Runs`)."""
    with Runs(workers) as runs:
        return runs(calls)
