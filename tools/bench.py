"""Measure the book's budgets on this machine and print them as Markdown tables (`make bench`).

    python tools/bench.py [--chapters-only | --overhead-only]

- every chapter, executed in a fresh kernel as the build does: wall time (kernel start included)
  and peak memory (resident set of the kernel and its children, sampled every 50 ms);
- the book build from an empty execution cache (cold) and again with nothing changed (warm);
- the README's test command (`make test`), which executes each chapter once (nbval) and builds the
  book from those executions;
- the cost of leaving the gradient report on in a training step, as a ratio to a plain step
  (``tools/report_overhead.py``, ``measure()``; skipped, and said so, where that file is absent).

The book's budgets, on two CPU cores: a chapter <= 60 s and <= 1.5 GB (Binder's free tier has about
2 GB); a cold `make book` <= 4 min including the install of the environment (the cold build here
reuses the installed `.venv`, so its budget is what the install leaves); a rebuild with nothing
changed <= 30 s; `.ci/run` from a fresh clone <= 7 min (here `make test` with the environment
installed, against the same budget); the report <= 1.10x a plain step. The cold build empties
`_build/` first.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import chapters  # noqa: E402

BUDGET_SECONDS = 60
BUDGET_MIB = 1536
#: Budgets of the whole-book steps, in seconds (see the module docstring).
BUDGET_COLD, BUDGET_WARM, BUDGET_TEST = 4 * 60, 30, 7 * 60
#: The gradient report's cost in a training step, as a ratio to a plain step.
BUDGET_OVERHEAD = 1.10
OVERHEAD_TOOL = ROOT / "tools" / "report_overhead.py"


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        process = psutil.Process(pid)
        return process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    except psutil.Error:
        return 0


def run_chapter(path: Path) -> tuple[float, float]:
    """Execute one chapter like the build does; return (seconds, peak MiB)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(chapters.CHAPTERS)}})
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            manager = client.km
            if manager is not None and manager.has_kernel:
                peak = max(peak, _tree_rss(manager.provisioner.process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    return seconds, peak / 2**20


def _timed(command: list[str]) -> tuple[float, int]:
    """Run ``command`` in the repository; return (seconds, exit status). A failure's output goes to stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"`{' '.join(command)}` failed after {seconds:.0f} s; its last output:\n{done.stdout[-3000:]}",
              file=sys.stderr)
    return seconds, done.returncode


def _step(name: str, command: list[str], budget: int) -> bool:
    seconds, status = _timed(command)
    ok = f"**failed** (exit {status})" if status else "yes" if seconds <= budget else "**no**"
    print(f"| {name} | {seconds:.0f} | {budget} | {ok} |", flush=True)
    return status == 0


def report_overhead(tool: Path = OVERHEAD_TOOL) -> dict | None:
    """``measure()`` of ``tools/report_overhead.py``, or None where the file is absent."""
    if not tool.exists():
        return None
    spec = importlib.util.spec_from_file_location("report_overhead", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure()


def print_overhead(tool: Path = OVERHEAD_TOOL) -> None:
    """One table row: the report's overhead ratio against its budget."""
    print("\n| measurement | value | budget | within budget |\n|---|---:|---:|---|")
    result = report_overhead(tool)
    if result is None:
        print(f"| gradient report overhead (x plain step) | not measured: {tool.relative_to(ROOT)} is absent "
              f"| {BUDGET_OVERHEAD:.2f} | - |", flush=True)
        return
    ratio, budget = float(result["ratio"]), float(result.get("budget", BUDGET_OVERHEAD))
    print(f"| gradient report overhead (x plain step) | {ratio:.2f} | {budget:.2f} | "
          f"{'yes' if ratio <= budget else '**no**'} |", flush=True)


def main(chapters_only: bool = False, overhead_only: bool = False) -> None:
    os.environ.setdefault("DEEPGRAD_DEVICE", "cpu")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Measured on {platform.node()}: {os.cpu_count()} CPUs, load average {load} at the start, "
          f"Python {platform.python_version()}.\n")
    if overhead_only:
        print_overhead()
        return
    print(f"| chapter | time (s) | peak memory (MiB) | within budget ({BUDGET_SECONDS} s, {BUDGET_MIB} MiB) |")
    print("|---|---:|---:|---|")
    for stem, path in chapters.notebook_chapters().items():
        seconds, mib = run_chapter(path)
        ok = "yes" if seconds <= BUDGET_SECONDS and mib <= BUDGET_MIB else "**no**"
        print(f"| {stem} | {seconds:.1f} | {mib:.0f} | {ok} |", flush=True)
    if chapters_only:
        return
    shutil.rmtree(ROOT / "_build", ignore_errors=True)
    print("\n| step | time (s) | budget (s) | within budget |\n|---|---:|---:|---|")
    if _step("book build, cold (empty _build/, environment installed)", ["make", "book"], BUDGET_COLD):
        _step("book build, warm (nothing changed)", ["make", "book"], BUDGET_WARM)
    _step("make test (lint, unit, nbval executing each chapter once, build, browser)", ["make", "test"],
          BUDGET_TEST)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nLoad average {load} after the builds and tests.")
    print_overhead()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(chapters_only="--chapters-only" in arguments, overhead_only="--overhead-only" in arguments)
