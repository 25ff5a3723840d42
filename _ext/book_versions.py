"""Sphinx extension: the versions the book was built with, as MyST substitutions.

The execution report (execution.md) writes ``{{ python_version }}``, ``{{ torch_version }}`` and so on;
this fills them in from the environment that builds the book, so the page cannot go stale.
"""

from __future__ import annotations

import platform
from importlib import metadata

#: Substitution name -> distribution whose installed version it shows.
DISTRIBUTIONS = {
    "book_version": "deepgrad",
    "torch_version": "torch",
    "numpy_version": "numpy",
    "sklearn_version": "scikit-learn",
    "matplotlib_version": "matplotlib",
    "jupyter_book_version": "jupyter-book",
    "myst_nb_version": "myst-nb",
}


def versions() -> dict[str, str]:
    found = {"python_version": platform.python_version()}
    for key, dist in DISTRIBUTIONS.items():
        try:
            found[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[key] = "not installed"
    return found


def _add_versions(app, config) -> None:
    config.myst_substitutions = {**(config.myst_substitutions or {}), **versions()}


def setup(app):
    app.connect("config-inited", _add_versions)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
