"""Run chapters as a learner on Colab does: in a bare Python with Colab's relevant packages only, the
install cell installing deepgrad from a git URL (here a local clone of this checkout's commit).

    python tools/colab_check.py [--venv DIR] [--fresh] [--url URL] [STEM | PATH.ipynb ...]

- The "Colab-like" environment is a virtual environment (default /tmp/deepgrad-colab) holding PyTorch
  (``torch==2.13.0``: the CPU build where the package index serves it), NumPy, Matplotlib,
  scikit-learn and ipykernel, nothing else (and a current pip, as Colab has); ``--fresh`` (or a
  missing DIR) creates it anew.
- The install cell's ``git+https://github.com/OWNER/REPO`` is replaced by ``--url``, by default
  ``git+file://`` of a clone of this checkout's HEAD (commit your changes first), made in a temporary
  folder. The first chapter's install cell installs ``deepgrad[chapters]``; the time it takes and
  what it adds to the environment are reported separately.
- Each chapter (default: every ``chapters/*.md`` notebook; or the given stems, or ``.ipynb`` files such
  as learner notebooks) is converted with jupytext and executed with nbclient in a kernel of that
  environment, from an empty folder, without PYTHONPATH and without DEEPGRAD_BOOK: as a learner runs it.

It prints one line per chapter (ok or FAILED, seconds, outputs written to stderr) and a summary, and
exits non-zero when a chapter fails. It is not part of ``make test``: it installs from the package index
and takes a few minutes per chapter on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "git+https://github.com/OWNER/REPO"
#: What the Colab-like environment holds before the install cell (Colab's packages the book uses).
COLAB_PACKAGES = ["torch==2.13.0", "numpy", "matplotlib", "scikit-learn", "ipykernel"]
KERNEL = "deepgrad-colab-check"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def make_venv(venv: Path) -> float:
    """Create the Colab-like environment; return the seconds it took."""
    start = time.perf_counter()
    run([sys.executable, "-m", "venv", "--clear", str(venv)])
    # Colab's pip is recent; the one venv bundles may be older than PEP 508's file URLs (packaging < 22)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *COLAB_PACKAGES])
    return time.perf_counter() - start


def installed(venv: Path) -> dict[str, str]:
    out = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    return {p["name"].lower(): p["version"] for p in json.loads(out.stdout)}


def size_mb(venv: Path) -> float:
    out = run(["du", "-sk", str(venv)], capture_output=True, text=True)
    return int(out.stdout.split()[0]) / 1024


def clone_url(workdir: Path) -> str:
    """``git+file://`` of a clone of this checkout's HEAD (what pip would fetch from GitHub)."""
    head = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True).stdout.strip()
    if dirty:
        print("note: uncommitted changes are not in the clone (it is HEAD's commit)", file=sys.stderr)
    clone = workdir / "repository"
    run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)])
    run(["git", "-C", str(clone), "checkout", "--quiet", head])
    return f"git+file://{clone}@{head}"


def kernel_spec(venv: Path, workdir: Path) -> None:
    """A kernelspec for the environment's Python, found through JUPYTER_PATH."""
    folder = workdir / "jupyter" / "kernels" / KERNEL
    folder.mkdir(parents=True)
    spec = {"argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (Colab-like)", "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    os.environ["JUPYTER_PATH"] = str(workdir / "jupyter")


def notebook(source: Path, url: str):
    """The chapter as a notebook, its install cell pointed at ``url``."""
    import jupytext
    import nbformat

    nb = jupytext.read(source) if source.suffix == ".md" else nbformat.read(source, as_version=4)
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and PLACEHOLDER in cell.source:
            cell.source = cell.source.replace(PLACEHOLDER, url)
            replaced += 1
    if not replaced:
        raise SystemExit(f"{source}: no install cell with {PLACEHOLDER} (point it at the placeholder first)")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (Colab-like)", "language": "python"}
    return nb


def execute(nb, folder: Path, timeout: int) -> tuple[float, str | None, list[str]]:
    """Execute in ``folder``; return seconds, the error (or None), and the stderr texts."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    start = time.perf_counter()
    error = None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(folder)}}).execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1]
    seconds = time.perf_counter() - start
    stderr = [o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    return seconds, error, stderr


def chapters(arguments: list[str]) -> list[Path]:
    import jupytext

    if not arguments:
        return sorted(p for p in (ROOT / "chapters").glob("*.md") if jupytext.read(p).metadata.get("kernelspec"))
    return [Path(a) if a.endswith(".ipynb") else ROOT / "chapters" / f"{a}.md" for a in arguments]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter stems or .ipynb files (default: every chapter)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/deepgrad-colab"))
    parser.add_argument("--fresh", action="store_true", help="create the environment anew")
    parser.add_argument("--url", help="what the install cell installs from (default: a clone of HEAD)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    args = parser.parse_args()
    paths = chapters(args.chapters)
    for variable in ("PYTHONPATH", "DEEPGRAD_BOOK"):  # the learner's kernel has neither
        os.environ.pop(variable, None)

    if args.fresh or not (args.venv / "bin" / "python").exists():
        print(f"creating the Colab-like environment {args.venv}: {' '.join(COLAB_PACKAGES)}", flush=True)
        print(f"  {make_venv(args.venv):.0f} s", flush=True)
    before, before_mb = installed(args.venv), size_mb(args.venv)
    if "deepgrad" in before:
        print(f"note: deepgrad is already installed in {args.venv}: the install cell will do nothing "
              "(use --fresh to time the install)", flush=True)

    with tempfile.TemporaryDirectory(prefix="colab-check-") as tmp:
        workdir = Path(tmp)
        url = args.url or clone_url(workdir)
        kernel_spec(args.venv, workdir)
        print(f"install cell URL: {url}", flush=True)

        # The install cell alone first, so that its time is not counted in the first chapter's.
        install_only = notebook(paths[0], url)
        install_only.cells = [c for c in install_only.cells if c.cell_type == "code"][:1]
        seconds, error, _ = execute(install_only, workdir, timeout=900)
        after, after_mb = installed(args.venv), size_mb(args.venv)
        added = sorted(set(after) - set(before))
        changed = sorted(n for n in set(after) & set(before) if after[n] != before[n])
        print(f"install cell: {seconds:.0f} s, {'ok' if error is None else 'FAILED: ' + error}; environment "
              f"{before_mb:.0f} MB -> {after_mb:.0f} MB; {len(added)} packages added: {', '.join(added)}; "
              f"changed: {', '.join(f'{n} {before[n]} -> {after[n]}' for n in changed) or 'none'}", flush=True)
        if error is not None:
            return 1

        failed = []
        for path in paths:
            folder = workdir / "run" / path.stem
            folder.mkdir(parents=True)
            seconds, error, stderr = execute(notebook(path, url), folder, args.timeout)
            status = "ok" if error is None else f"FAILED: {error}"
            warned = f"; stderr in {len(stderr)} output(s): {stderr[0].strip().splitlines()[0][:120]}" if stderr else ""
            print(f"{path.stem:16s} {seconds:6.1f} s  {status}{warned}", flush=True)
            if error is not None:
                failed.append(path.stem)
    print(f"{len(paths) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
