"""Measure the book's budgets on this machine and print them as a Markdown table (`make bench`).

    python tools/bench.py [--chapters-only]

- every chapter, executed in a fresh kernel as the build does: wall time (kernel start included)
  and peak memory (resident set of the kernel and its children, sampled every 50 ms);
- the book build from an empty execution cache (cold) and again with nothing changed (warm);
- the README's test command.

The budgets (design/architecture.md): a chapter <= 60 s and <= 1.5 GB on two cores; a cold build
<= 8 min, a warm one <= 30 s; the tests <= 15 min. The cold build empties `_build/` first.
"""

from __future__ import annotations

import os
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


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(chapters_only: bool) -> None:
    os.environ.setdefault("DEEPGRAD_DEVICE", "cpu")
    print(f"| chapter | time (s) | peak memory (MiB) | within budget ({BUDGET_SECONDS} s, {BUDGET_MIB} MiB) |")
    print("|---|---:|---:|---|")
    for stem, path in chapters.notebook_chapters().items():
        seconds, mib = run_chapter(path)
        ok = "yes" if seconds <= BUDGET_SECONDS and mib <= BUDGET_MIB else "**no**"
        print(f"| {stem} | {seconds:.1f} | {mib:.0f} | {ok} |", flush=True)
    if chapters_only:
        return
    shutil.rmtree(ROOT / "_build", ignore_errors=True)
    print("\n| step | time (s) |\n|---|---:|")
    print(f"| book build, cold (empty cache) | {_timed(['make', 'book']):.0f} |", flush=True)
    print(f"| book build, warm (nothing changed) | {_timed(['make', 'book']):.0f} |", flush=True)
    print(f"| make test | {_timed(['make', 'test']):.0f} |", flush=True)


if __name__ == "__main__":
    main(chapters_only="--chapters-only" in sys.argv[1:])
