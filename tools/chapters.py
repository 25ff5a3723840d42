"""Maintenance commands for the book's chapters, called by the Makefile.

    python tools/chapters.py reference [STEM ...]   execute chapters, record their outputs in tests/reference/
                                                    (a chapter over LIMIT_SECONDS in all is stopped, not recorded)
    python tools/chapters.py prepare [STEM ...]     build _build/nbval/: each reference with the current code
    python tools/chapters.py cache-guard             clear the execution cache if deepgrad or the pins changed
    python tools/chapters.py execute [--jobs N]      execute the chapters the execution cache lacks, N at a time
    python tools/chapters.py nbval [--jobs N] [PYTEST OPTIONS]   nbval on _build/nbval/ in N pytest processes

The nbval contract: tests/reference/<stem>.ipynb holds the text outputs a chapter produced when it
was last recorded. `prepare` copies each reference and carries the chapter's *current* code into it
(jupytext --update keeps the recorded outputs), so that nbval runs the new code against the old
outputs: a chapter whose output changed fails until `make reference` records it again.

Each chapter is executed once per `make test`: nbval executes it, and `stage` (called by the nbval
plugin in conftest.py when pytest runs with ``--stage-executions``) stores that execution in MyST-NB's
execution cache under the key MyST-NB looks up, so the book build that follows finds every chapter
there and executes none. `make book` alone still executes whatever the cache lacks: `execute` first
runs those chapters two at a time (each in its own kernel, exactly as MyST-NB would run it, and each
kernel keeps PyTorch's usual number of threads, so the numbers are those of a sequential run) and
caches them the way MyST-NB does; a chapter that fails there is left to the build, which executes it
again and reports the error with its traceback.

Every execution these commands make is one for the book: they set ``DEEPGRAD_BOOK=1`` (and the
kernels they start inherit it), so that ``dg.glue`` and ``dg.plotting.glue_figure`` hand their
values to MyST-NB instead of showing them (``deepgrad.book.in_book``).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import yaml
from jupytext.combine import combine_inputs_with_outputs

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
REFERENCE = ROOT / "tests" / "reference"
NBVAL_DIR = ROOT / "_build" / "nbval"
CACHE_STAMP = ROOT / "_build" / ".deepgrad-hash"
EXECUTION_CACHE = ROOT / "_build" / ".jupyter_cache"  # MyST-NB's default nb_execution_cache_path
EXECUTION_STATE = [EXECUTION_CACHE, ROOT / "_build" / ".doctrees"]
REFRESH = "make reference"
#: Set for every execution made for the book (deepgrad.book.in_book); kernels inherit it.
BOOK_ENV = {"DEEPGRAD_BOOK": "1"}
#: Output types that are not text; nbval does not compare them, so they are not stored.
BINARY_MIME = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
#: MyST-NB's glue stores a glued figure under this prefix (conftest.py tells nbval to skip them too).
GLUE_PREFIX = "application/papermill.record/"
#: A chapter's whole execution (all its cells, from the first cell's start) aims at AIM_SECONDS and
#: must never take more than LIMIT_SECONDS; `reference` stops a chapter at LIMIT_SECONDS.
AIM_SECONDS, LIMIT_SECONDS = 60, 120
_clock = time.perf_counter  # the tests replace it


class OverLimit(Exception):
    """A chapter's cells ran longer than :data:`LIMIT_SECONDS` in all."""


def notebook_chapters() -> dict[str, Path]:
    """Chapters that are notebooks (have a kernelspec), by file stem."""
    found = {}
    for path in sorted(CHAPTERS.glob("*.md")):
        if jupytext.read(path).metadata.get("kernelspec"):
            found[path.stem] = path
    return found


def _strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop binary outputs and volatile metadata, keeping what nbval compares."""
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)
        cell["id"] = f"cell-{index}"  # stable ids: a re-recorded reference differs only where outputs do
        for output in cell.get("outputs", []):
            if "data" in output:
                for mime in BINARY_MIME:
                    output["data"].pop(mime, None)
                    output["data"].pop(GLUE_PREFIX + mime, None)
    return nb


def execute_within_limit(nb: nbformat.NotebookNode) -> float:
    """Execute a chapter's notebook in a fresh kernel, in place; the seconds its cells took in all.

    The time runs from the first cell's start to the last cell's end (nbclient's ``on_cell_executed``),
    so neither the kernel's start nor its shutdown is counted. Each cell may run only what is left of
    :data:`LIMIT_SECONDS` since the first cell started, so a chapter is stopped as soon as it exceeds
    the limit in total: :class:`OverLimit` is raised then.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    started: list[float] = []
    ended: list[float] = []

    def time_left(cell) -> float:
        now = _clock()
        if not started:
            started.append(now)
        return max(LIMIT_SECONDS - (now - started[0]), 0.01)  # 0 would mean no limit to nbclient

    def cell_executed(**_) -> None:
        ended.append(_clock())

    client = NotebookClient(nb, timeout=math.ceil(LIMIT_SECONDS), timeout_func=time_left, kernel_name="python3",
                            on_cell_executed=cell_executed, resources={"metadata": {"path": str(CHAPTERS)}})
    try:
        client.execute()
    except CellTimeoutError as error:
        raise OverLimit(f"stopped after {_clock() - started[0]:.0f} s") from error
    seconds = ended[-1] - started[0] if started and ended else 0.0
    if seconds > LIMIT_SECONDS:
        raise OverLimit(f"took {seconds:.0f} s")
    return seconds


def record(stems: list[str]) -> None:
    chapters = notebook_chapters()
    unknown = [s for s in stems if s not in chapters]
    if unknown:
        sys.exit(f"unknown chapter(s) {', '.join(unknown)}; notebook chapters are: {', '.join(chapters)}")
    REFERENCE.mkdir(parents=True, exist_ok=True)
    over = []
    for stem in stems or list(chapters):
        nb = jupytext.read(chapters[stem])
        print(f"executing chapters/{stem}.md ...", flush=True)
        try:
            seconds = execute_within_limit(nb)
        except OverLimit as error:
            print(f"chapters/{stem}.md {error}: over the limit of {LIMIT_SECONDS} s for a whole chapter; "
                  "not recorded", flush=True)
            over.append(stem)
            continue
        aim = f", over the {AIM_SECONDS} s a chapter aims at" if seconds > AIM_SECONDS else ""
        print(f"executed chapters/{stem}.md in {seconds:.1f} s{aim}", flush=True)
        nbformat.write(_strip(nb), REFERENCE / f"{stem}.ipynb")
        print(f"recorded tests/reference/{stem}.ipynb")
    stale = sorted(p.name for p in REFERENCE.glob("*.ipynb") if p.stem not in chapters)
    for name in stale:
        (REFERENCE / name).unlink()
        print(f"removed tests/reference/{name} (no such chapter)")
    if over:
        sys.exit(f"not recorded: {', '.join(f'chapters/{s}.md' for s in over)}: a chapter's cells must run in "
                 f"{LIMIT_SECONDS} s or less in all (it aims at {AIM_SECONDS} s). Make it faster, or, if the "
                 "machine was busy (see `uptime`), record it again when it is not.")


def prepare(stems: list[str] | None = None) -> None:
    chapters = notebook_chapters()
    if stems:  # only these chapters (e.g. while writing one); the full check runs without arguments
        unknown = [s for s in stems if s not in chapters]
        if unknown:
            sys.exit(f"no chapter named {', '.join(unknown)}; chapters: {', '.join(chapters)}")
        chapters = {stem: chapters[stem] for stem in stems}
    missing = [stem for stem in chapters if not (REFERENCE / f"{stem}.ipynb").exists()]
    stale = [] if stems else sorted(p.stem for p in REFERENCE.glob("*.ipynb") if p.stem not in chapters)
    problems = [f"chapters/{s}.md has no recorded outputs (tests/reference/{s}.ipynb)" for s in missing]
    problems += [f"tests/reference/{s}.ipynb has no chapter" for s in stale]
    if problems:
        hint = f"Run `{REFRESH}` to record the reference outputs, then commit tests/reference/."
        sys.exit("\n".join(problems + [hint]))
    if not stems:
        shutil.rmtree(NBVAL_DIR, ignore_errors=True)
    NBVAL_DIR.mkdir(parents=True, exist_ok=True)
    for stem, path in chapters.items():
        recorded = nbformat.read(REFERENCE / f"{stem}.ipynb", as_version=4)
        current = jupytext.read(path)
        combined = combine_inputs_with_outputs(current, recorded, fmt="md:myst")
        nbformat.write(combined, NBVAL_DIR / f"{stem}.ipynb")
    print(f"prepared {len(chapters)} chapter(s) for nbval in {NBVAL_DIR.relative_to(ROOT)}/")


def _book_config() -> dict:
    """The book's _config.yml (empty where there is none)."""
    path = ROOT / "_config.yml"
    return (yaml.safe_load(path.read_text()) if path.exists() else None) or {}


def book_notebook(path: Path) -> nbformat.NotebookNode:
    """The chapter as the book build reads it: MyST-NB's own reader, with the book's MyST extensions.

    Its code cells (source and metadata) and its kernelspec are what MyST-NB's jupyter-cache hashes
    to find a chapter's execution, so a staged execution must be built on this notebook.
    """
    from myst_nb.core.read import read_myst_markdown_notebook
    from myst_parser.config.main import MdParserConfig

    extensions = _book_config().get("parse", {}).get("myst_enable_extensions", [])
    return read_myst_markdown_notebook(path.read_text(), config=MdParserConfig(enable_extensions=set(extensions)),
                                       add_source_map=True, path=path)


def _language_info() -> dict:
    """The ``language_info`` an IPython kernel of this environment reports (MyST-NB reads its lexer)."""
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def stage(stem: str, outputs: list[list[dict]], seconds: float | None = None,
          sources: list[str] | None = None, cache_path: Path | None = None) -> int:
    """Store one execution of chapters/<stem>.md in MyST-NB's execution cache; return its record id.

    ``outputs[i]`` are the outputs of the chapter's i-th code cell, as nbformat output dicts, from a
    run of every cell in order in one fresh kernel (what nbval does). The record is keyed exactly as
    MyST-NB looks a chapter up (``book_notebook``), so the build merges these outputs instead of
    executing the chapter. ``seconds`` is shown on the book's execution report page. ``sources``,
    the code that was executed, must be the chapter's code as MyST-NB reads it (ValueError if not).
    """
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    path = CHAPTERS / f"{stem}.md"
    nb = book_notebook(path)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if len(code) != len(outputs):
        raise ValueError(f"outputs: chapters/{stem}.md has {len(code)} code cells, got outputs for {len(outputs)}")
    if sources is not None:
        if len(sources) != len(code):
            raise ValueError(f"sources: chapters/{stem}.md has {len(code)} code cells, {len(sources)} were executed")
        differ = [i for i, (cell, source) in enumerate(zip(code, sources, strict=True)) if cell.source != source]
        if differ:
            raise ValueError(f"sources: the executed code differs from chapters/{stem}.md (code cells {differ})")
    for count, (cell, cell_outputs) in enumerate(zip(code, outputs, strict=True), start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.from_dict(output) for output in cell_outputs]
    nb.metadata["language_info"] = _language_info()
    nbformat.validate(nb)
    cache = get_cache(str(cache_path or EXECUTION_CACHE))
    data = {} if seconds is None else {"execution_seconds": seconds}
    record = cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data=data), check_validity=True,
                                         overwrite=True)
    return record.pk


def _book_execution_settings() -> dict:
    return _book_config().get("execute", {})


def _execute_one(stem: str) -> tuple[str, str | None, float, str | None]:
    """Execute chapters/<stem>.md as the build would; return (stem, notebook JSON or None, seconds, error)."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = book_notebook(CHAPTERS / f"{stem}.md")
    settings = _book_execution_settings()
    result = single_nb_execution(nb, cwd=str(CHAPTERS), timeout=settings.get("timeout", 30),
                                 allow_errors=settings.get("allow_errors", False), meta_override=True)
    if result.err is not None:
        return stem, None, result.time, result.exc_string
    return stem, nbformat.writes(nb), result.time, None


def uncached(cache_path: Path | None = None) -> list[str]:
    """The notebook chapters for which MyST-NB's cache holds no execution of their current code."""
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_path or EXECUTION_CACHE))
    missing = []
    for stem, path in notebook_chapters().items():
        try:
            cache.match_cache_notebook(book_notebook(path))
        except KeyError:
            missing.append(stem)
    return missing


def execute(jobs: int = 2, cache_path: Path | None = None) -> list[str]:
    """Execute the chapters the cache lacks, ``jobs`` at a time; cache each success as MyST-NB does.

    MyST-NB executes one chapter at a time while Sphinx reads them; this runs the same executor
    (jupyter-cache's ``single_nb_execution``, the chapter's folder as working directory, the book's
    timeout) in ``jobs`` worker processes first. Returns the chapters it cached.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    if not isinstance(jobs, int) or isinstance(jobs, bool):
        raise TypeError(f"jobs must be an int, got {type(jobs).__name__}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    pending = uncached(cache_path)
    if not pending:
        return []
    cache = get_cache(str(cache_path or EXECUTION_CACHE))
    print(f"executing {len(pending)} chapter(s), {jobs} at a time: {', '.join(pending)}", flush=True)
    cached = []
    # forked workers: each inherits this process's settings and drives its own kernel process
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=multiprocessing.get_context("fork")) as pool:
        for future in as_completed([pool.submit(_execute_one, stem) for stem in pending]):
            stem, text, seconds, error = future.result()
            if text is None:
                print(f"chapters/{stem}.md failed after {seconds:.0f} s; the book build will run it again "
                      f"and report the error:\n{error}", flush=True)
                continue
            bundle = CacheBundleIn(nbformat.reads(text, as_version=4), str(CHAPTERS / f"{stem}.md"),
                                   data={"execution_seconds": seconds})
            cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
            over = f", over the limit of {LIMIT_SECONDS} s for a chapter" if seconds > LIMIT_SECONDS else ""
            print(f"executed chapters/{stem}.md in {seconds:.1f} s{over}", flush=True)
            cached.append(stem)
    return cached


def _expected_seconds(stem: str, cache) -> float:
    """How long a chapter took last time (from the execution cache), else its number of code cells."""
    try:
        record = cache.match_cache_notebook(book_notebook(CHAPTERS / f"{stem}.md"))
        return float(record.data.get("execution_seconds") or 0) or 1.0
    except KeyError:
        recorded = nbformat.read(NBVAL_DIR / f"{stem}.ipynb", as_version=4)
        return float(sum(cell.cell_type == "code" for cell in recorded.cells))


def split(weights: dict[str, float], jobs: int) -> list[list[str]]:
    """Longest first, each to the least loaded of ``jobs`` groups; groups keep chapter order inside."""
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(weights)) or 1)]
    loads = [0.0] * len(groups)
    for stem in sorted(weights, key=lambda s: -weights[s]):
        index = loads.index(min(loads))
        groups[index].append(stem)
        loads[index] += weights[stem]
    order = list(weights)
    return [sorted(group, key=order.index) for group in groups if group]


def nbval(jobs: int, options: list[str]) -> int:
    """Run nbval on the prepared chapters in ``jobs`` pytest processes; return the worst exit status.

    Each process runs its chapters one after the other, each in a fresh kernel with PyTorch's usual
    number of threads (two kernels at once share the cores; the numbers are those of a sequential
    run). Their outputs are printed group by group once all have finished.
    """
    import subprocess

    from jupyter_cache import get_cache

    cache = get_cache(str(EXECUTION_CACHE))  # created here, before the processes stage into it
    stems = [p.stem for p in sorted(NBVAL_DIR.glob("*.ipynb"))]
    groups = split({stem: _expected_seconds(stem, cache) for stem in stems}, jobs)
    print(f"nbval on {len(stems)} chapter(s) in {len(groups)} process(es): "
          + "; ".join(", ".join(group) for group in groups), flush=True)
    running = []
    for index, group in enumerate(groups):
        log = NBVAL_DIR / f"pytest-{index}.log"
        command = [sys.executable, "-m", "pytest", "--nbval", *[str(NBVAL_DIR / f"{s}.ipynb") for s in group],
                   "-o", f"cache_dir={ROOT / '_build' / '.pytest_cache' / f'nbval-{index}'}", *options]
        with log.open("w") as out:
            running.append((log, subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)))
    statuses = []
    for log, process in running:
        statuses.append(process.wait())
        print(log.read_text(), flush=True)
    return max(statuses, default=0)


def _library_hash() -> str:
    digest = hashlib.sha256()
    files = sorted((ROOT / "lib").rglob("*.py")) + [ROOT / "requirements.txt", ROOT / "constraints.txt"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_guard() -> None:
    """MyST-NB's cache keys on a chapter's code only; a change in deepgrad must re-execute every chapter."""
    current = _library_hash()
    previous = CACHE_STAMP.read_text().strip() if CACHE_STAMP.exists() else None
    if previous != current:
        if previous is not None:
            print("deepgrad or the pinned requirements changed: clearing the execution cache")
        for path in EXECUTION_STATE:
            shutil.rmtree(path, ignore_errors=True)
        CACHE_STAMP.parent.mkdir(parents=True, exist_ok=True)
        CACHE_STAMP.write_text(current + "\n")


def book_mode() -> None:
    """Mark this process, and the kernels and processes it starts, as executing for the book."""
    os.environ.update(BOOK_ENV)


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command in ("reference", "execute", "nbval"):
        book_mode()
    if command == "reference":
        record(args)
    elif command == "prepare":
        prepare(args)
    elif command == "cache-guard":
        cache_guard()
    elif command in ("execute", "nbval"):
        jobs = 2
        if args[:1] == ["--jobs"]:
            jobs, args = int(args[1]), args[2:]
        if command == "execute":
            execute(jobs)
        else:
            sys.exit(nbval(jobs, args))
    else:
        sys.exit(__doc__)
