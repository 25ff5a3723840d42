"""Every chapter starts with the install cell: on Colab (or any Jupyter without the book's library) it
installs deepgrad and MyST-NB; where deepgrad is importable (the book's build, Binder) it does nothing.

The cell is tagged ``remove-cell``: the HTML book does not show it. Its ``%pip`` line is indented under
an ``if``; IPython turns it into ``get_ipython().run_line_magic("pip", ...)`` there too, which these tests
check by transforming and running the cell with a stand-in for IPython.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import jupytext
import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

#: The exact text of every chapter's first code cell (README, "Publishing", quotes it).
INSTALL_CELL = '''\
# On Colab, or any Jupyter without the book's library: install deepgrad (does nothing otherwise).
import importlib.util

if importlib.util.find_spec("deepgrad") is None:
    %pip install --quiet "deepgrad @ git+https://github.com/OWNER/REPO" myst-nb'''

CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.md") if jupytext.read(p).metadata.get("kernelspec"))


class FakeIPython:
    """Records the magics a cell runs instead of running them."""

    def __init__(self):
        self.magics: list[tuple[str, str]] = []

    def run_line_magic(self, name: str, line: str) -> None:
        self.magics.append((name, line))


def _run_install_cell() -> list[tuple[str, str]]:
    code = TransformerManager().transform_cell(INSTALL_CELL)
    shell = FakeIPython()
    exec(compile(code, "<install cell>", "exec"), {"get_ipython": lambda: shell})
    return shell.magics


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_first_code_cell_is_the_install_cell(chapter):
    cells = [cell for cell in jupytext.read(chapter).cells if cell.cell_type == "code"]
    assert cells, f"{chapter.name} has no code cell"
    first = cells[0]
    assert first.source == INSTALL_CELL, (
        f"{chapter.name}: the first code cell must be the install cell, exactly:\n{INSTALL_CELL}\n"
        f"found:\n{first.source}")
    assert first.metadata.get("tags") == ["remove-cell"], f"{chapter.name}: tag the install cell [remove-cell]"


def test_there_are_chapters():
    assert len(CHAPTERS) >= 7


def test_the_indented_pip_magic_is_ipython_syntax():
    code = TransformerManager().transform_cell(INSTALL_CELL)
    assert "get_ipython().run_line_magic('pip'" in code
    compile(code, "<install cell>", "exec")  # valid Python once IPython has transformed it


def test_install_cell_does_nothing_where_deepgrad_is_importable():
    assert importlib.util.find_spec("deepgrad") is not None
    assert _run_install_cell() == []


def test_install_cell_installs_deepgrad_and_myst_nb_where_deepgrad_is_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepgrad" else real(name, *a))
    magics = _run_install_cell()
    assert len(magics) == 1 and magics[0][0] == "pip"
    arguments = shlex.split(magics[0][1])  # as the shell reads the line IPython hands it
    assert arguments[:2] == ["install", "--quiet"]
    requirements = [Requirement(a) for a in arguments[2:]]
    assert [r.name for r in requirements] == ["deepgrad", "myst-nb"]
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert requirements[0].url == f"git+{repository}", "install deepgrad from the book's repository (_config.yml)"


def test_binder_requirements_agree_with_the_pins():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    listed = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", binder, re.MULTILINE))
    assert listed["torch"].endswith("+cpu"), "Binder gets the CPU build of PyTorch"
    assert "download.pytorch.org/whl/cpu" in binder
    for name, version in listed.items():
        assert name in pins, f"binder/requirements.txt pins {name}, which requirements.txt does not"
        assert version.split("+")[0] == pins[name], f"{name}: binder has {version}, requirements.txt {pins[name]}"
    assert {"torch", "numpy", "scikit-learn", "matplotlib", "myst-nb", "jupytext"} <= set(listed)
