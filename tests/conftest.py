"""Fixtures and hooks shared by the unit tests.

On CI (``BOOK_CI`` set, as ``.ci/run`` does) the tests that need a system program the CI machine
installs, Chromium for the browser tests and a PostgreSQL server for the study workers, must run: a
skip there means the CI lost what it is meant to test, so it is reported as a failure.
"""

import os
import sys
import types

import pytest
import torch

import deepgrad as dg

#: Test files whose every test must run on CI, and fixtures whose users must.
REQUIRED_ON_CI_FILES = {"test_browser.py"}
REQUIRED_ON_CI_FIXTURES = {"postgres_url"}


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, in float64-friendly deterministic mode."""
    dg.seed_everything(0)
    yield
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def glued(monkeypatch):
    """A build of the book (DEEPGRAD_BOOK=1), with myst_nb.glue replaced by a recorder of (name, value, display)."""
    monkeypatch.setenv("DEEPGRAD_BOOK", "1")
    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    return calls


def required_on_ci(item) -> bool:
    return item.path.name in REQUIRED_ON_CI_FILES or bool(REQUIRED_ON_CI_FIXTURES & set(item.fixturenames))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("BOOK_CI") and report.skipped and not hasattr(report, "wasxfail") and required_on_ci(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where this test must run (BOOK_CI is set): {reason}"
