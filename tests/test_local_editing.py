"""Editing and running chapters locally leaves the book as it was.

- Saving a chapter from JupyterLab (jupytext's contents manager, configured by ``[tool.jupytext]`` in
  pyproject.toml) writes the ``.md`` back byte for byte: no ``jupytext_version`` stamp, and the header's
  kernelspec is the one JupyterLab's default kernel (ipykernel's ``python3``) writes.
- A notebook exported from a chapter goes to ``notebooks/`` (ignored by git; README's command), and the
  book's build ignores ``chapters/*.ipynb`` too, which would otherwise be a second source for the page.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import jupytext
import pytest
import yaml
from jupytext.config import load_jupytext_config
from sphinx.util.matching import Matcher

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted(p for p in (ROOT / "chapters").glob("*.md") if jupytext.read(p).metadata.get("kernelspec"))
#: What JupyterLab puts in a notebook's metadata once ipykernel's default kernel has run it.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python", "file_extension": ".py",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                 "nbconvert_exporter": "python"}


def save_as_jupyterlab(path: Path, config) -> str:
    """The text jupytext writes when JupyterLab saves ``path`` after running it (ids, outputs, metadata)."""
    nb = jupytext.reads(path.read_text(), fmt="md:myst", config=config)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"
        if cell.cell_type == "code":
            cell["execution_count"] = index
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "output\n"}]
    return jupytext.writes(nb, fmt="md:myst", config=config)


def test_jupyterlab_default_kernel_is_the_one_the_chapters_name():
    from ipykernel.kernelspec import get_kernel_dict

    assert get_kernel_dict()["display_name"] == KERNELSPEC["display_name"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_saving_a_chapter_in_jupyterlab_leaves_it_byte_identical(chapter):
    config = load_jupytext_config(str(chapter))
    assert config is not None, "pyproject.toml's [tool.jupytext] was not found"
    saved = save_as_jupyterlab(chapter, config)
    assert saved == chapter.read_text(), (
        f"saving {chapter.name} from JupyterLab would change it: its header must match what jupytext writes "
        f"(kernelspec display_name {KERNELSPEC['display_name']!r}, no jupytext_version)")


def test_without_the_configuration_the_version_stamp_would_dirty_the_chapter():
    """The round trip can fail: jupytext's default header carries its version."""
    chapter = ROOT / "chapters" / "backprop.md"
    saved = save_as_jupyterlab(chapter, None)
    assert saved != chapter.read_text() and f"jupytext_version: {jupytext.__version__}" in saved


def test_the_build_ignores_exported_notebooks():
    patterns = yaml.safe_load((ROOT / "_config.yml").read_text())["exclude_patterns"]
    excluded = Matcher(patterns)  # how Sphinx applies exclude_patterns to the files it finds
    assert excluded("chapters/backprop.ipynb")
    assert excluded("notebooks")  # a folder: Sphinx skips it whole
    assert not excluded("chapters/backprop.md") and not excluded("intro.md")


def test_readme_exports_notebooks_where_git_and_the_build_do_not_look():
    readme = (ROOT / "README.md").read_text()
    exports = re.findall(r"`([^`]*jupytext --to ipynb[^`]*)`", readme)
    assert exports, "README shows how to export a chapter as a notebook"
    for command in exports:
        assert "-o notebooks/" in command, command
        assert command.startswith("mkdir -p notebooks && "), "jupytext does not create the folder it writes to"
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/backprop.ipynb"], cwd=ROOT)
    assert ignored.returncode == 0, "notebooks/ is in .gitignore"


def test_readme_opens_one_chapter_without_building_the_book():
    readme = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[chapters]"' in readme
    assert "jupyter lab chapters/" in readme
