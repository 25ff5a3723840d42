"""Every chapter starts with the install cell: on Colab (or any Jupyter without the book's library) it
installs ``deepgrad[chapters]`` (the library with what the chapters use: pyproject.toml's extra) from the
book's repository; where deepgrad is importable (the book's build, Binder) it does nothing.

The cell is tagged ``remove-cell``: the HTML book does not show it. It is plain Python (no ``%pip``, whose
note "you may need to restart the kernel" would mislead, and which carries on after a failed install): pip
runs in a subprocess with ``check=True``. These tests run the cell with a stand-in for ``subprocess.run``.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

#: The exact text of every chapter's first code cell (README, "Publishing", quotes it).
INSTALL_CELL = '''\
# On Colab, or any Jupyter without the book's library: install deepgrad with the packages the chapters
# use (does nothing where deepgrad is importable). Nothing is imported before it, so the kernel need
# not restart; pip prints only errors, and a failed install stops here.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("deepgrad") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "deepgrad[chapters] @ git+https://github.com/OWNER/REPO"], check=True)'''

CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.md") if jupytext.read(p).metadata.get("kernelspec"))


def _run_install_cell(monkeypatch, deepgrad_missing: bool) -> list[list[str]]:
    """Run the install cell; return the commands it ran, recorded instead of run."""
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: commands.append((command, kw)))
    if deepgrad_missing:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "deepgrad" else real(name, *a))
    exec(compile(INSTALL_CELL, "<install cell>", "exec"), {})
    return commands


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


def test_the_install_cell_is_plain_python_that_says_nothing_misleading():
    ast.parse(INSTALL_CELL)  # no IPython magic: runs in any kernel, as a script too
    assert "%pip" not in INSTALL_CELL and "may need to restart" not in INSTALL_CELL


def test_install_cell_does_nothing_where_deepgrad_is_importable(monkeypatch):
    assert importlib.util.find_spec("deepgrad") is not None
    assert _run_install_cell(monkeypatch, deepgrad_missing=False) == []


def test_install_cell_installs_deepgrad_with_the_chapters_extra_where_deepgrad_is_missing(monkeypatch):
    commands = _run_install_cell(monkeypatch, deepgrad_missing=True)
    assert len(commands) == 1
    command, options = commands[0]
    assert options == {"check": True}, "a failed install must stop the cell"
    assert command[:5] == [sys.executable, "-m", "pip", "install", "--quiet"]  # into the kernel's Python
    requirements = [Requirement(a) for a in command[5:]]
    assert [(r.name, r.extras) for r in requirements] == [("deepgrad", {"chapters"})]
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert requirements[0].url == f"git+{repository}", "install deepgrad from the book's repository (_config.yml)"


def test_set_repository_points_the_install_cell_at_the_published_repository(tmp_path):
    """tools/publish.py set-repository replaces the placeholder in the cell (the Colab notebooks' source)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import publish

    (tmp_path / "chapters").mkdir()
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/OWNER/REPO\n")
    (tmp_path / "chapters" / "x.md").write_text(INSTALL_CELL)
    publish.set_repository("someone/book", root=tmp_path)
    assert '"deepgrad[chapters] @ git+https://github.com/someone/book"' in (tmp_path / "chapters" / "x.md").read_text()
