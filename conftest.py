"""Root pytest configuration for nbval on the chapters.

- Figures are not compared (their pixels depend on fonts and the renderer): nbval already skips
  ``image/png``, and this also skips the images MyST-NB's ``glue`` stores under
  ``application/papermill.record/...``.
- When a chapter's outputs no longer match its recorded reference, say how to refresh.
- nbval's executions are executions for the book: ``DEEPGRAD_BOOK=1`` is set for the kernels it
  starts, so that ``dg.glue`` stores its values for MyST-NB as the recorded references do.
- With ``--stage-executions`` (`make nbval`, hence `make test`): each chapter that nbval executed
  without an error is stored in MyST-NB's execution cache (``tools/chapters.py``, ``stage``), so the
  book build that follows reuses that execution instead of running the chapter a second time.
"""

import importlib.util
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

#: Glued figures: stored as images under MyST-NB's glue prefix; pixels depend on fonts and renderer.
GLUED_IMAGES = tuple(f"application/papermill.record/{mime}"
                     for mime in ("image/png", "image/jpeg", "image/svg+xml", "application/pdf"))

#: Per executed notebook (path): the outputs of each code cell, whether every cell ran, the time spent.
_executions: dict[str, dict] = {}


def pytest_addoption(parser):
    parser.addoption("--stage-executions", action="store_true", default=False,
                     help="store each chapter nbval executed in MyST-NB's execution cache for the book build")


def pytest_configure(config):
    if getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False):
        os.environ["DEEPGRAD_BOOK"] = "1"  # the kernels nbval starts inherit it


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        notebook = getattr(item, "parent", None)
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and GLUED_IMAGES[0] not in skip:
            notebook.skip_compare = tuple(skip) + GLUED_IMAGES


def _is_cell(item) -> bool:
    return hasattr(item, "cell_num") and hasattr(item, "test_outputs") and hasattr(item.parent, "nb")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep what each chapter cell printed, and whether it ran, for ``pytest_sessionfinish``."""
    outcome = yield
    if call.when != "call" or not item.config.getoption("stage_executions") or not _is_cell(item):
        return
    run = _executions.setdefault(str(item.parent.path), {"outputs": {}, "ran": True, "seconds": 0.0,
                                                        "started": time.perf_counter()})
    report = outcome.get_result()
    outputs = item.test_outputs
    # A cell that raised, timed out or was skipped is no execution to reuse. A cell whose output
    # differs from the reference did run: its outputs are what the chapter prints now.
    errored = outputs is None or any(o.get("output_type") == "error" for o in outputs)
    if errored or report.skipped:
        run["ran"] = False
    run["outputs"][item.cell_num] = [dict(o) for o in outputs or []]
    run.setdefault("sources", {})[item.cell_num] = item.cell.source
    run["seconds"] += call.duration


def pytest_sessionfinish(session, exitstatus):
    if not session.config.getoption("stage_executions") or not _executions:
        return
    spec = importlib.util.spec_from_file_location("_chapters_tool", ROOT / "tools" / "chapters.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    chapters = tool.notebook_chapters()
    staged, skipped = [], []
    for path, run in sorted(_executions.items()):
        stem = Path(path).stem
        cells = run["outputs"]
        if stem not in chapters or not run["ran"] or sorted(cells) != list(range(len(cells))):
            skipped.append(stem)
            continue
        try:
            tool.stage(stem, [cells[i] for i in range(len(cells))], seconds=round(run["seconds"], 2),
                       sources=[run["sources"][i] for i in range(len(cells))])
        except ValueError as error:  # the prepared notebook's code differs from the chapter's
            skipped.append(f"{stem} ({error})")
            continue
        staged.append(stem)
    _executions.clear()
    lines = [f"staged {len(staged)} chapter execution(s) in {tool.EXECUTION_CACHE.relative_to(ROOT)} "
             "for the book build"]
    if skipped:
        lines.append(f"not staged (the book build will execute them): {', '.join(skipped)}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        for line in lines:
            reporter.write_line(line)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failed = [r.nodeid for r in terminalreporter.stats.get("failed", []) if ".ipynb::" in r.nodeid]
    if failed:
        chapters = sorted({nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".ipynb") for nodeid in failed})
        terminalreporter.write_line(
            f"\nChapter output differs from its recorded reference: {', '.join(chapters)}.\n"
            "If the change is intended, run `make reference` and commit tests/reference/; "
            "otherwise the diff above shows what changed.",
            red=True, bold=True,
        )
