"""Every chapter runs wherever a learner opens it: what its code imports is installed there.

The third-party modules each chapter imports are derived from its code cells (parsed with ``ast``, after
IPython has turned any magic into Python), and so are the library's own (every ``import`` in
``lib/deepgrad``, those inside functions included: ``deepgrad.tuning`` imports Optuna when first used).
Each module is mapped to the distribution that provides it (``sklearn`` -> ``scikit-learn``). Then:

- the install cell's ``deepgrad[chapters]`` (pyproject.toml: the dependencies and the ``chapters`` extra)
  provides every one of them, and lists nothing else beyond the packages that Optuna loads by itself;
- Binder pins every one at the version of requirements.txt / constraints.txt, and its postBuild installs
  the same extra, editable;
- the extra's version ranges contain the book's pins.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import jupytext
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.md") if jupytext.read(p).metadata.get("kernelspec"))
LIBRARY = sorted((ROOT / "lib" / "deepgrad").rglob("*.py"))
EXTRA = "chapters"

#: Import names whose distribution differs and is not installed here to look it up.
KNOWN = {"sklearn": "scikit-learn", "IPython": "ipython", "myst_nb": "myst-nb", "yaml": "pyyaml"}
#: Every Jupyter kernel brings these (ipykernel depends on them).
KERNEL = {"ipython"}
#: Modules deepgrad imports only while the book is built (DEEPGRAD_BOOK=1), never in a learner's Jupyter.
BUILD_ONLY: set[str] = {"myst_nb"}
#: Needed at run time but imported by a dependency, not by the book's code: distribution -> why.
LOADED_BY_DEPENDENCIES = {
    "cmaes": "Optuna's CmaEsSampler (deepgrad.tuning's sampler 'cmaes') imports it",
    "greenlet": "Optuna's GPSampler imports it (without it: a warning on stderr, which fails the build)",
}


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (IPython syntax allowed)."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"deepgrad", "__future__"}}


@functools.cache
def chapter_modules(path: Path) -> frozenset[str]:
    cells = [cell.source for cell in jupytext.read(path).cells if cell.cell_type == "code"]
    return frozenset(third_party(set().union(*(imported_modules(source) for source in cells))))


@functools.cache
def library_modules() -> frozenset[str]:
    return frozenset(third_party(set().union(*(imported_modules(path.read_text()) for path in LIBRARY))) - BUILD_ONLY)


@functools.cache
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution(module: str) -> str:
    """The distribution that provides the import name ``module``."""
    providers = _providers().get(module) or [KNOWN.get(module, module)]
    return canonicalize_name(providers[0])


def _requirements(entries: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, entries)}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = _requirements(PROJECT["dependencies"])
CHAPTERS_EXTRA = _requirements(PROJECT["optional-dependencies"][EXTRA])


def _pins(path: Path) -> dict[str, str]:
    text = path.read_text()
    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", text, re.MULTILINE)}


PINS = _pins(ROOT / "constraints.txt") | _pins(ROOT / "requirements.txt")
BINDER = _pins(ROOT / "binder" / "requirements.txt")


def needed() -> dict[str, set[str]]:
    """Distribution -> who imports it (chapter stems, 'deepgrad')."""
    users: dict[str, set[str]] = {}
    for path in CHAPTERS:
        for module in chapter_modules(path):
            users.setdefault(distribution(module), set()).add(path.stem)
    for module in library_modules():
        users.setdefault(distribution(module), set()).add("deepgrad")
    return {name: who for name, who in users.items() if name not in KERNEL}


def test_the_derivation_finds_the_imports_it_must():
    """The scan sees plain, dotted, from- and magic-adjacent imports, and ignores relative ones."""
    source = "%matplotlib inline\nimport numpy as np, os\nfrom sklearn.datasets import load_digits\n" \
             "def f():\n    import optuna.visualization\nfrom . import x\nfrom deepgrad import tuning\n"
    assert third_party(imported_modules(source)) == {"numpy", "sklearn", "optuna"}
    assert distribution("sklearn") == "scikit-learn"
    # the library's lazy imports are seen: Optuna is imported inside deepgrad.tuning's functions
    assert "optuna" in library_modules() and "torch" in library_modules()
    assert any("scipy" in chapter_modules(p) for p in CHAPTERS) or "scipy" in library_modules()


def test_a_chapter_importing_an_unprovided_package_is_caught(tmp_path):
    chapter = tmp_path / "x.md"
    chapter.write_text((ROOT / "chapters" / "backprop.md").read_text().replace(
        "import deepgrad as dg", "import pandas\nimport deepgrad as dg", 1))
    missing = {distribution(m) for m in chapter_modules(chapter)} - set(CORE) - set(CHAPTERS_EXTRA) - KERNEL
    assert missing == {"pandas"}


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_install_cell_provides_what_the_chapter_imports(chapter):
    """The install cell installs deepgrad[chapters]: the library's dependencies and the extra."""
    wanted = {distribution(m) for m in chapter_modules(chapter) | library_modules()} - KERNEL
    missing = sorted(wanted - set(CORE) - set(CHAPTERS_EXTRA))
    assert not missing, f"{chapter.name} imports {missing}: add them to [project.optional-dependencies] {EXTRA}"


def test_the_extra_lists_only_what_is_used():
    users = needed()
    for name in CHAPTERS_EXTRA:
        assert name in users or name in LOADED_BY_DEPENDENCIES, (
            f"the {EXTRA} extra lists {name}, which no chapter and no deepgrad module imports")
    for name in LOADED_BY_DEPENDENCIES:
        assert name in CHAPTERS_EXTRA
    assert "optuna" in users and "optuna" in CHAPTERS_EXTRA  # the reason for the two above


def test_the_extra_and_the_dependencies_accept_the_pinned_versions():
    for name, requirement in (CORE | CHAPTERS_EXTRA).items():
        assert name in PINS, f"{name} is not pinned in requirements.txt or constraints.txt"
        assert requirement.specifier.contains(PINS[name], prereleases=True), (
            f"pyproject.toml asks {requirement}, the book pins {name}=={PINS[name]}")


def test_binder_pins_everything_the_chapters_use_at_the_book_versions():
    for name in set(CORE) | set(CHAPTERS_EXTRA) | set(needed()):
        assert name in BINDER, f"binder/requirements.txt does not pin {name}"
    for name, version in BINDER.items():
        assert name in PINS, f"binder/requirements.txt pins {name}, which the book does not"
        assert version.split("+")[0] == PINS[name], f"{name}: binder has {version}, the book {PINS[name]}"
    assert "jupytext" in BINDER  # JupyterLab opens the chapters through it


def test_binder_gets_cpu_pytorch_and_installs_the_extra_editable():
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert BINDER["torch"].endswith("+cpu"), "Binder gets the CPU build of PyTorch"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in binder
    post_build = [line.strip() for line in (ROOT / "binder" / "postBuild").read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    installs = [line for line in post_build if "pip install" in line]
    assert installs == ['python -m pip install --no-cache-dir -e ".[chapters]"'], (
        "postBuild installs deepgrad editable (no build/ left in the checkout) with the chapters extra")
