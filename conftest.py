"""Root pytest configuration: when a chapter's outputs no longer match its recorded reference, say how to refresh."""


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
