"""Run every chapter's code, assertions included, on a CUDA machine that has PyTorch but no Jupyter.

The book is built and tested on CPUs; the chapters also promise to use CUDA when it is present
(``dg.default_device()``). This tool checks that promise on a machine with a GPU:

    python tools/gpu_check.py export DIR     # here: chapters -> plain scripts in DIR, plus stand-ins
    python tools/gpu_check.py run DIR        # on the GPU machine, from the repository root

``export`` writes each notebook chapter as ``DIR/<stem>.py`` (jupytext's percent format) and adds
minimal stand-ins for ``myst_nb.glue`` and ``IPython.display`` (glue becomes a no-op), so the
scripts need only PyTorch, NumPy, SciPy, scikit-learn and matplotlib. ``run`` executes each script
in a fresh interpreter with ``DEEPGRAD_DEVICE=cuda`` and prints one line per chapter: time, peak
GPU memory and whether every assertion held. Text outputs are not compared (GPU arithmetic differs
in the last bits from the CPU references that nbval checks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

MYST_NB_STUB = '''"""Stand-in for MyST-NB's glue outside a notebook: the value is dropped."""
def glue(name, variable=None, display=True):
    return None
'''
IPYTHON_INIT = '''"""Stand-in for IPython outside a notebook: what matplotlib asks of it."""
version_info = (9, 0, 0)
def get_ipython():
    return None
'''
IPYTHON_STUB = '''"""Stand-in for IPython.display outside a notebook."""
class Markdown(str):
    pass
def display(*objects, **kwargs):
    return None
'''
#: Appended to each script: the peak GPU memory, read by ``run``.
FOOTER = '''
import torch as _torch
if _torch.cuda.is_available():
    print("GPU_PEAK_MIB", _torch.cuda.max_memory_allocated() / 2**20)
'''


def export(out: Path) -> None:
    """Write every notebook chapter as a script into ``out`` with the stand-in packages."""
    import jupytext

    from chapters import notebook_chapters

    (out / "stubs" / "myst_nb").mkdir(parents=True, exist_ok=True)
    (out / "stubs" / "IPython").mkdir(parents=True, exist_ok=True)
    (out / "stubs" / "myst_nb" / "__init__.py").write_text(MYST_NB_STUB)
    (out / "stubs" / "IPython" / "__init__.py").write_text(IPYTHON_INIT)
    (out / "stubs" / "IPython" / "display.py").write_text(IPYTHON_STUB)
    for stem, path in notebook_chapters().items():
        notebook = jupytext.read(path)
        # the Colab install cell is left out: the device has deepgrad already (lib/ on PYTHONPATH)
        notebook.cells = [cell for cell in notebook.cells if 'find_spec("deepgrad")' not in cell.source]
        script = jupytext.writes(notebook, fmt="py:percent")
        (out / f"{stem}.py").write_text(script + FOOTER)
    print(f"wrote {len(notebook_chapters())} chapter scripts to {out}")


def run(folder: Path) -> int:
    """Execute each exported chapter on CUDA; return the number that failed."""
    env = dict(os.environ, DEEPGRAD_DEVICE="cuda", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(folder / "stubs"), str(ROOT / "lib"),
                                           os.environ.get("PYTHONPATH", "")]))
    failed = 0
    for script in sorted(folder.glob("*.py")):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, script.name], cwd=folder, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("GPU_PEAK_MIB")]
        status = "ok" if done.returncode == 0 else "FAILED"
        failed += done.returncode != 0
        print(f"{script.stem:16s} {status:6s} {seconds:6.1f} s  peak GPU {float(peak[0]) if peak else 0:7.1f} MiB")
        if done.returncode != 0:
            print(done.stderr[-3000:])
    return failed


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("export", "run"):
        print(__doc__)
        return 2
    folder = Path(argv[1]).resolve()
    if argv[0] == "export":
        export(folder)
        return 0
    return 1 if run(folder) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
