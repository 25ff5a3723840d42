"""The execution report's versions come from the environment that builds the book."""

import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
import book_versions  # noqa: E402


def test_versions_are_read_from_the_environment():
    found = book_versions.versions()
    assert found["python_version"] == platform.python_version()
    assert found["torch_version"] == torch.__version__
    assert set(found) == {"python_version", *book_versions.DISTRIBUTIONS}
    assert "not installed" not in found.values()


def test_they_become_myst_substitutions_without_losing_existing_ones():
    class Config:
        myst_substitutions = {"mine": "kept"}

    config = Config()
    book_versions._add_versions(None, config)
    assert config.myst_substitutions["mine"] == "kept"
    assert config.myst_substitutions["torch_version"] == torch.__version__
