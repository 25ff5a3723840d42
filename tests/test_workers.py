"""The worker pool (deepgrad.workers), freed memory handed back to the system, and a light ``import deepgrad``."""

import ctypes
import functools
import os
import platform
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import torch

from deepgrad import evidence, workers
from deepgrad import normfree as nf

#: What ``import deepgrad`` (and a worker running a training job) must not import.
HEAVY = ("matplotlib", "scipy", "sklearn", "optuna")
LIB = Path(__file__).resolve().parent.parent / "lib"


# Module-level jobs (a worker process imports them from here)
def noisy_sum(seed: int, size: int = 1000) -> float:
    """A value that depends on the seed and on float summation order (so on threads, were they not fixed)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, size // 10, generator=generator).sum().item()


def as_tensor(value: float) -> torch.Tensor:
    return torch.tensor(value)


def heavy_modules_loaded() -> float:
    """How many of HEAVY this process has imported."""
    return float(sum(name in sys.modules for name in HEAVY))


def threads_seen() -> float:
    return float(torch.get_num_threads())


def default_dtype_bits() -> float:
    """The bits of a tensor made with the default dtype (32 unless a setting says otherwise)."""
    return float(torch.ones(1).dtype.itemsize * 8)


def mean_of_noise(seed: int) -> torch.Tensor:
    """A tensor in the default dtype: its value depends on that dtype."""
    return torch.randn(1000, generator=torch.Generator().manual_seed(seed), dtype=torch.get_default_dtype()).mean()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def broken() -> float:
    raise ZeroDivisionError("this call fails")


def die() -> float:
    os._exit(3)  # a worker that dies, as one killed for memory does


@pytest.fixture(scope="module")
def pool():
    """One pool of two workers for the tests that need only a pool (starting one takes seconds)."""
    with workers.Runs(2) as runs:
        yield runs


# --- the pool --------------------------------------------------------------------------------

def test_two_workers_give_exactly_what_one_gives(pool):
    calls = [functools.partial(noisy_sum, seed) for seed in range(6)]
    one = workers.run_many(calls, workers=1)
    two = pool(calls[:4]) + pool(calls[4:])  # one pool, two batches
    assert one == two
    assert len(set(one)) == 6  # the calls differ, so equal lists mean the order was kept


def test_workers_start_with_the_parents_default_dtype_and_determinism():
    calls = [functools.partial(mean_of_noise, seed) for seed in range(3)] + [default_dtype_bits]
    before = torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled()
    torch.set_default_dtype(torch.float64)
    torch.use_deterministic_algorithms(True)
    try:
        one = workers.run_many(calls, workers=1)
        with workers.Runs(2) as runs:
            two = runs(calls)
            deterministic = runs([torch.are_deterministic_algorithms_enabled] * 2)
    finally:
        torch.set_default_dtype(before[0])
        torch.use_deterministic_algorithms(before[1])
    assert one[-1] == 64.0 and one == two
    assert deterministic == [1.0, 1.0]
    assert one[0] != float(torch.randn(1000, generator=torch.Generator().manual_seed(0)).mean())  # float32's differs


def test_every_call_has_one_thread_and_the_count_is_restored(pool):
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1, so that a count left at 1 would show
    try:
        assert workers.run_many([threads_seen, threads_seen]) == [1.0, 1.0]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert pool([threads_seen] * 2) == [1.0, 1.0]


def test_values_become_floats(pool):
    assert workers.run_many([functools.partial(as_tensor, 2.5)]) == [2.5]
    assert pool([functools.partial(as_tensor, 2.5)] * 2) == [2.5, 2.5]
    assert isinstance(workers.run_many([functools.partial(noisy_sum, 0, 10)])[0], float)


def test_values_come_back_as_returned_without_as_float():
    calls = [functools.partial(as_tensor, 2.5), functools.partial(noisy_sum, 0, 10)]
    one = workers.Runs(1, as_float=False)(calls)
    with workers.Runs(2, as_float=False) as runs:
        two = runs(calls)
    for values in (one, two):
        assert isinstance(values[0], torch.Tensor) and values[0].item() == 2.5
    assert one[1] == two[1] == workers.run_many(calls[1:])[0]
    with pytest.raises(TypeError, match="as_float"):
        workers.Runs(1, as_float="no")


def test_a_worker_imports_no_plotting_or_tuning_library_for_a_training_job(pool):
    assert pool([heavy_modules_loaded] * 2) == [0.0, 0.0]


def test_a_failing_call_ends_its_batch_without_waiting_for_the_others():
    with workers.Runs(2) as runs:
        runs([threads_seen] * 2)  # the workers are up
        start = time.perf_counter()
        with pytest.raises(ZeroDivisionError, match="this call fails"):
            runs([functools.partial(nap, 4.0), broken] + [functools.partial(nap, 4.0)] * 4)
        assert time.perf_counter() - start < 3.0  # not after the 4 s call before it, nor the ones queued
        with pytest.raises(RuntimeError, match="closed"):  # the batch closed the pool
            runs([threads_seen])


def test_a_worker_that_dies_is_reported_with_a_hint():
    with pytest.raises(BrokenProcessPool, match=r"a worker process died, perhaps out of memory; use workers=1"):
        workers.run_many([die, threads_seen], workers=2)


def test_a_closed_pool_refuses_to_run():
    for n in (1, 2):
        runs = workers.Runs(n)
        runs.close()
        with pytest.raises(RuntimeError, match="this Runs is closed"):
            runs([threads_seen])
        with workers.Runs(n) as runs:
            pass
        with pytest.raises(RuntimeError, match="this Runs is closed"):
            runs([threads_seen])


def test_a_worker_hands_memory_back_after_every_call(monkeypatch):
    released = []
    monkeypatch.setattr(workers, "release_memory", lambda: released.append(1) or True)
    assert workers._in_worker(functools.partial(as_tensor, 1.0)) == 1.0
    with pytest.raises(ZeroDivisionError):  # also when the call fails
        workers._in_worker(lambda: 1 / 0)
    assert released == [1, 1]

    class NoPool:  # no workers are started: only the order of things is checked
        def __init__(self, **kwargs):
            assert released == [1, 1, 1]  # the parent gives its own freed memory back before they start

        def shutdown(self, *args, **kwargs):
            pass

    monkeypatch.setattr(workers, "ProcessPoolExecutor", NoPool)
    with workers.Runs(2):
        assert released == [1, 1, 1]
    with workers.Runs(1) as runs:  # in-process: once after the batch
        assert released == [1, 1, 1]
        assert runs([threads_seen, threads_seen]) == [1.0, 1.0] and released == [1, 1, 1, 1]


def test_calls_that_cannot_go_to_a_worker_are_refused_before_anything_runs():
    def local():
        return 0.0

    with pytest.raises(TypeError, match=r"calls\[1\] must be callable"):
        workers.run_many([threads_seen, 1.0])
    with pytest.raises(ValueError, match=r"calls\[0\] is a lambda .*module-level function.*workers=1"):
        workers.run_many([lambda: 1.0], workers=2)
    with pytest.raises(ValueError, match=r"calls\[1\] is a lambda or a function defined inside another"):
        workers.run_many([threads_seen, local], workers=2)
    with pytest.raises(ValueError, match="lambda"):  # a partial of a partial of a lambda
        workers.run_many([functools.partial(functools.partial(lambda s: s, 1))], workers=2)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        workers.Runs(0)
    # in-process, the same calls are fine
    assert workers.run_many([lambda: 1.0, local]) == [1.0, 0.0]


def test_normfree_keeps_its_old_names_for_the_pool():
    assert nf.Runs is workers.Runs and nf.run_many is workers.run_many


def test_evidence_compare_runs_its_seeds_through_the_pool(monkeypatch):
    pools = []

    class Recording(workers.Runs):
        def __init__(self, n):
            pools.append(n)
            super().__init__(n)

    monkeypatch.setattr(evidence, "Runs", Recording)
    a, b = functools.partial(noisy_sum, size=100), functools.partial(noisy_sum, size=200)
    one = evidence.compare(a, b, seeds=3, workers=1)
    two = evidence.compare(a, b, seeds=3, workers=2)
    assert pools == [1, 2] and one == two
    assert one.a == tuple(noisy_sum(s, 100) for s in range(3))


# --- freed memory back to the system ---------------------------------------------------------

@pytest.fixture
def fresh_lookup():
    workers._malloc_trim.cache_clear()
    yield
    workers._malloc_trim.cache_clear()


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
@pytest.mark.skipif(any(name in os.environ.get("LD_PRELOAD", "") for name in ("tcmalloc", "jemalloc")),
                    reason="another allocator is preloaded: malloc and free are not glibc's")
def test_release_memory_gives_freed_heap_pages_back(fresh_lookup):
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024  # below glibc's mmap threshold: the blocks come from the heap
    blocks = [libc.malloc(size) for _ in range(1600)]  # 100 MiB
    for block in blocks:
        ctypes.memset(block, 1, size)
    for block in blocks[:-1]:  # the last block stays: the freed ones are not at the top of the heap
        libc.free(block)
    before = _rss()
    assert workers.release_memory() is True
    after = _rss()
    libc.free(blocks[-1])
    assert before - after > 50 * 2**20, (before, after)
    assert workers.release_memory() is True  # safe to call again, with nothing to give back


class _NoTrim:
    """A C library without malloc_trim (macOS, Windows)."""


def test_release_memory_does_nothing_without_malloc_trim(monkeypatch, fresh_lookup):
    monkeypatch.setattr(workers.ctypes, "CDLL", lambda name: _NoTrim())
    assert workers.release_memory() is False
    assert workers.release_memory() is False


def test_release_memory_does_nothing_without_a_c_library_to_open(monkeypatch, fresh_lookup):
    def refuse(name):
        raise OSError("no C library")

    monkeypatch.setattr(workers.ctypes, "CDLL", refuse)
    assert workers.release_memory() is False


# --- import deepgrad stays light ---------------------------------------------------------------

LIGHT_IMPORT = f"""
import sys
import deepgrad as dg
heavy = {HEAVY!r}
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
assert {{"plotting", "explorer", "tuning", "workers", "evidence", "glue"}} <= set(dir(dg))
assert set(dg.__all__) <= set(dir(dg))
dg.data.adding_problem(4, 10)  # data that does not need scikit-learn
assert not [m for m in heavy if m in sys.modules]
from deepgrad import plotting
assert "matplotlib" in sys.modules and plotting is dg.plotting and dg.plotting.figure
from deepgrad import explorer, tuning
assert dg.tuning is tuning and dg.explorer is explorer
dg.data.spirals(10)  # its stratified split is scikit-learn's, imported now
assert "sklearn" in sys.modules
try:
    dg.no_such_thing
except AttributeError as error:
    assert "no_such_thing" in str(error)
else:
    raise AssertionError("dg.no_such_thing did not raise")
print("ok")
"""


def test_import_deepgrad_loads_no_plotting_science_or_tuning_library():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LIB), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_the_lazy_submodules_are_visible_to_static_analysers():
    """Editors and type checkers do not run ``__getattr__``: each lazy submodule is imported under TYPE_CHECKING."""
    import ast

    import deepgrad

    tree = ast.parse((LIB / "deepgrad" / "__init__.py").read_text())
    seen = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            seen |= {alias.name for stmt in node.body if isinstance(stmt, ast.ImportFrom) for alias in stmt.names}
    assert set(deepgrad._LAZY) <= seen, set(deepgrad._LAZY) - seen
