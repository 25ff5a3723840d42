"""The kernels that execute the chapters start without log noise (tools/ipython_kernel_config.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "ipython_kernel_config.py"
INSTALLED = Path(sys.prefix) / "etc" / "ipython" / CONFIG.name

START_KERNEL = """
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="python3")
try:
    kc.execute_interactive("import warnings; warnings.warn('a cell warning'); print('ran')", timeout=60)
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
"""


@pytest.fixture(scope="module")
def kernel_run() -> subprocess.CompletedProcess:
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtual environment (the Makefile installs the config into .venv)")
    return subprocess.run([sys.executable, "-c", START_KERNEL], capture_output=True, text=True, timeout=120)


def test_the_makefile_installed_the_kernel_config():
    assert INSTALLED.is_file(), f"{INSTALLED} is missing: run `make book` or `make test` to create the venv"
    assert INSTALLED.read_text() == CONFIG.read_text(), f"{INSTALLED} is stale: delete .venv/.installed and rerun make"


def test_a_kernel_starts_without_the_tcp_warning(kernel_run):
    assert kernel_run.returncode == 0, kernel_run.stderr
    assert "ran" in kernel_run.stdout
    assert "without encryption" not in kernel_run.stderr, kernel_run.stderr
    assert "IPKernelApp" not in kernel_run.stderr, kernel_run.stderr


def test_cell_warnings_still_reach_the_cell(kernel_run):
    # The config quiets the kernel's own log, not the code it runs.
    assert "a cell warning" in kernel_run.stdout + kernel_run.stderr
