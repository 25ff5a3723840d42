"""PyTorch's CPU build on every install path that needs it, and nothing added where it is not asked.

- The Makefile: ``TORCH_INDEX=cpu`` (or an index URL) installs torch alone from that index, once,
  bounded (one retry, 15 s timeout), before requirements.txt; without it no index is added.
- The GitHub workflows set ``TORCH_INDEX=cpu`` for ``make``, and key their cached .venv on it.
- Binder pins ``torch==<version>+cpu`` from PyTorch's CPU index (tests/test_chapter_requirements.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH = re.search(r"^torch==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)


def install_commands(*variables: str) -> list[str]:
    """The commands ``make`` would run to install the environment (dry run, nothing executed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_INDEX"}
    done = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), ".venv/.installed", *variables],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "pip install" in line]


def test_by_default_no_index_is_added():
    commands = install_commands()
    assert len(commands) == 2 and "-r requirements.txt" in commands[0]
    assert not any("index-url" in c or "download.pytorch.org" in c for c in commands)


@pytest.mark.parametrize("value, url", [("cpu", CPU_INDEX), ("http://127.0.0.1:9/simple", "http://127.0.0.1:9/simple")])
def test_torch_index_installs_torch_alone_from_that_index_first_and_bounded(value, url):
    commands = install_commands(f"TORCH_INDEX={value}")
    torch, requirements = commands[0], commands[1]
    assert f"--index-url {url} " in torch and torch.endswith(f"torch=={TORCH}")
    assert "--no-deps" in torch, "only torch comes from that index; its dependencies from the pinned default"
    assert "--retries 1" in torch and "--timeout 15" in torch, "an unreachable index must not stall the install"
    assert "-r requirements.txt" in requirements and "index-url" not in requirements


WORKFLOWS = {name: yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
             for name in ("book.yml", "test.yml", "weekly.yml")}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflows_install_cpu_pytorch(name):
    for job_name, job in WORKFLOWS[name]["jobs"].items():
        runs = " ".join(step.get("run", "") for step in job.get("steps", []))
        if "make" not in runs and ".ci/run" not in runs:
            continue
        assert job.get("env", {}).get("TORCH_INDEX") == "cpu", f"{name}: job {job_name} installs CUDA PyTorch"
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/cache@") and step["with"]["path"] == ".venv":
                assert "torch-cpu" in step["with"]["key"], f"{name}: a cached CUDA .venv would be restored"
