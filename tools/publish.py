"""Publishing steps of the book's GitHub workflow (.github/workflows/book.yml).

    python tools/publish.py set-repository OWNER/NAME   point the book at the repository it is published from
    python tools/publish.py notebooks DIR                copy every executed chapter to DIR/chapters/<stem>.ipynb

`set-repository` replaces the placeholder ``OWNER/REPO`` of the repository address in `_config.yml`
(launch, edit and issue buttons) and in the chapters' install cell (what Colab installs), in the
checkout it runs in; the repository itself keeps the placeholder.

`notebooks` collects the notebooks MyST-NB wrote while building the book
(`_build/jupyter_execute/chapters/*.ipynb`: the chapters with their outputs) for the `notebooks`
branch, which the Colab launch button opens (`_ext/book_html.py` points the button there). It fails
when a chapter of the book has no executed notebook, so a half-built book is never published.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "OWNER/REPO"
EXECUTED = ROOT / "_build" / "jupyter_execute"
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


def collect_notebooks(destination: Path, executed: Path = EXECUTED, stems: list[str] | None = None) -> list[Path]:
    """Copy the executed chapters (default: those of the book) to ``destination/chapters/``."""
    if stems is None:
        stems = book_chapters()
    missing = [s for s in stems if not (executed / "chapters" / f"{s}.ipynb").exists()]
    if missing:
        sys.exit(f"no executed notebook for chapter(s) {', '.join(missing)} in {executed}: build the book first")
    target = destination / "chapters"
    shutil.rmtree(destination, ignore_errors=True)
    target.mkdir(parents=True)
    copies = []
    for stem in stems:
        copies.append(Path(shutil.copy2(executed / "chapters" / f"{stem}.ipynb", target / f"{stem}.ipynb")))
    (destination / "README.md").write_text(
        "# Executed chapters\n\nEvery chapter of the book as a notebook with its outputs, written by the\n"
        "book's publishing workflow from the `main` branch (do not edit here). Open one in Colab from\n"
        "the rocket button at the top of the chapter in the book.\n"
    )
    return copies


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "set-repository" and len(args) == 1:
        for path in set_repository(args[0]):
            print(f"{path.relative_to(ROOT)}: now points at github.com/{args[0]}")
    elif command == "notebooks" and len(args) == 1:
        copies = collect_notebooks(Path(args[0]).resolve())
        print(f"{len(copies)} executed chapter(s) in {args[0]}/chapters/")
    else:
        sys.exit(__doc__)
