"""Root pytest configuration for nbval on the chapters.

- Figures are not compared (design/architecture.md): nbval already skips ``image/png``, and this also
  skips the images MyST-NB's ``glue`` stores under ``application/papermill.record/...``.
- When a chapter's outputs no longer match its recorded reference, say how to refresh.
"""

#: Glued figures: stored as images under MyST-NB's glue prefix; pixels depend on fonts and renderer.
GLUED_IMAGES = tuple(f"application/papermill.record/{mime}"
                     for mime in ("image/png", "image/jpeg", "image/svg+xml", "application/pdf"))


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        notebook = getattr(item, "parent", None)
        skip = getattr(notebook, "skip_compare", None)
        if skip is not None and GLUED_IMAGES[0] not in skip:
            notebook.skip_compare = tuple(skip) + GLUED_IMAGES


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
