"""Publishing steps of the book's GitHub workflow (.github/workflows/book.yml).

    python tools/publish.py set-repository OWNER/NAME   point the book at the repository it is published from
    python tools/publish.py notebooks DIR                copy every learner notebook to DIR/chapters/<stem>.ipynb

`set-repository` replaces the placeholder ``OWNER/REPO`` of the repository address in `_config.yml`
(launch, edit and issue buttons) and in the chapters' install cell (what Colab installs), in the
checkout it runs in; the repository itself keeps the placeholder.

`notebooks` collects the learner notebooks that `make book` writes after the build
(`_build/learner/<stem>.ipynb`, tools/learner.py: each chapter with its outputs, its numbers and
figures in the text, no MyST markup) for the `notebooks` branch, which the Colab and Binder launch
buttons open (`_ext/book_html.py` points them there). Binder builds its image from that branch, so
the branch also carries what `binder/` installs (BINDER_FILES). It fails when a chapter of the book
has no learner notebook, so a half-built book is never published.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "OWNER/REPO"
LEARNER = ROOT / "_build" / "learner"
#: What Binder needs on the notebooks branch to build its image: binder/ and what it installs.
BINDER_FILES = ["binder", "pyproject.toml", "lib", "requirements.txt", "constraints.txt", "LICENSE"]
#: Files that name the repository through the placeholder.
REPOSITORY_FILES = ["_config.yml", "chapters/*.md"]


def set_repository(repository: str, root: Path = ROOT) -> list[Path]:
    """Replace ``github.com/OWNER/REPO`` by ``github.com/<repository>``; return the files changed."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repository):
        sys.exit(f"set-repository: expected OWNER/NAME, got {repository!r}")
    changed = []
    for pattern in REPOSITORY_FILES:
        for path in sorted(root.glob(pattern)):
            text = path.read_text()
            new = text.replace(f"github.com/{PLACEHOLDER}", f"github.com/{repository}")
            if new != text:
                path.write_text(new)
                changed.append(path)
    return changed


def book_chapters(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """The stems of the chapters in the table of contents (the ones the build executes)."""
    return re.findall(r"^\s*-?\s*file:\s*chapters/([\w-]+)\s*$", toc.read_text(), flags=re.MULTILINE)


def collect_notebooks(destination: Path, learner: Path = LEARNER, stems: list[str] | None = None,
                      root: Path = ROOT) -> list[Path]:
    """Copy the learner notebooks (default: the book's chapters) to ``destination/chapters/``, and
    the files Binder builds from (``BINDER_FILES``, those that exist) to ``destination``."""
    if stems is None:
        stems = book_chapters()
    missing = [s for s in stems if not (learner / f"{s}.ipynb").exists()]
    if missing:
        sys.exit(f"no learner notebook for chapter(s) {', '.join(missing)} in {learner}: "
                 "build the book first (make book)")
    target = destination / "chapters"
    shutil.rmtree(destination, ignore_errors=True)
    target.mkdir(parents=True)
    copies = []
    for stem in stems:
        copies.append(Path(shutil.copy2(learner / f"{stem}.ipynb", target / f"{stem}.ipynb")))
    for name in BINDER_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.exists():
            shutil.copy2(source, destination / name)
    (destination / "README.md").write_text(
        "# The chapters as notebooks\n\nEvery chapter of the book as a plain Jupyter notebook with its outputs,\n"
        "its numbers and figures in the text, written by the book's publishing workflow from the `main`\n"
        "branch (do not edit here). Open one in Colab or Binder from the rocket button at the top of the\n"
        "chapter in the book. `binder/` and the library are here for Binder, which builds from this branch.\n"
    )
    return copies


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "set-repository" and len(args) == 1:
        for path in set_repository(args[0]):
            print(f"{path.relative_to(ROOT)}: now points at github.com/{args[0]}")
    elif command == "notebooks" and len(args) == 1:
        copies = collect_notebooks(Path(args[0]).resolve())
        print(f"{len(copies)} learner notebook(s) in {args[0]}/chapters/")
    else:
        sys.exit(__doc__)
