"""The nbval contract's machinery (tools/chapters.py), on a throwaway chapter in a temporary tree."""

import importlib.util
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("chapters_tool", ROOT / "tools" / "chapters.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
sys.modules.setdefault("chapters_tool", tool)  # `execute`'s worker processes find their function by module name

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# A chapter

```{code-cell} ipython3
print(CODE)
```
"""


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for name in ("chapters", "tests/reference", "lib/deepgrad", "_build"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "lib/deepgrad/__init__.py").write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("torch==2.13.0\n")
    (tmp_path / "constraints.txt").write_text("")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "CHAPTERS", tmp_path / "chapters")
    monkeypatch.setattr(tool, "REFERENCE", tmp_path / "tests/reference")
    monkeypatch.setattr(tool, "NBVAL_DIR", tmp_path / "_build/nbval")
    monkeypatch.setattr(tool, "CACHE_STAMP", tmp_path / "_build/.deepgrad-hash")
    monkeypatch.setattr(tool, "EXECUTION_CACHE", tmp_path / "_build/.jupyter_cache")
    monkeypatch.setattr(tool, "EXECUTION_STATE", [tmp_path / "_build/.jupyter_cache"])
    return tmp_path


def _chapter(tree, code):
    (tree / "chapters/ch.md").write_text(HEADER.replace("CODE", code))


def _reference(tree, code, printed):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"),
                nbformat.v4.new_code_cell(f"print({code})", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text=f"{printed}\n")])]
    nbformat.write(nb, tree / "tests/reference/ch.ipynb")


def test_only_notebook_chapters_are_listed(tree):
    _chapter(tree, "1")
    (tree / "chapters/plain.md").write_text("# Not a notebook\n")
    assert list(tool.notebook_chapters()) == ["ch"]


def test_prepare_refuses_a_chapter_without_reference_and_names_the_fix(tree):
    _chapter(tree, "1")
    with pytest.raises(SystemExit, match=r"chapters/ch.md has no recorded outputs[\s\S]*`make reference`"):
        tool.prepare()


def test_prepare_refuses_a_reference_without_chapter(tree):
    _chapter(tree, "1")
    _reference(tree, "1", "1")
    (tree / "tests/reference/gone.ipynb").write_text((tree / "tests/reference/ch.ipynb").read_text())
    with pytest.raises(SystemExit, match="tests/reference/gone.ipynb has no chapter"):
        tool.prepare()


def test_prepare_carries_the_current_code_and_keeps_the_recorded_output(tree):
    _reference(tree, "1", "1")
    _chapter(tree, "2")  # the code changed since the reference was recorded
    tool.prepare()
    prepared = nbformat.read(tree / "_build/nbval/ch.ipynb", as_version=4)
    (code,) = [c for c in prepared.cells if c.cell_type == "code"]
    assert code.source == "print(2)"                 # nbval will run the new code ...
    assert code.outputs[0]["text"] == "1\n"           # ... against the old output, and fail


def test_prepare_named_chapters_only(tree):
    _reference(tree, "1", "1")
    _chapter(tree, "1")
    (tree / "chapters/other.md").write_text((tree / "chapters/ch.md").read_text())  # no reference yet
    with pytest.raises(SystemExit, match="other.md has no recorded outputs"):
        tool.prepare()
    tool.prepare(["ch"])  # the chapter being written can be checked alone
    assert (tree / "_build/nbval/ch.ipynb").exists()
    assert not (tree / "_build/nbval/other.ipynb").exists()
    with pytest.raises(SystemExit, match="no chapter named nope"):
        tool.prepare(["nope"])


def test_strip_drops_images_and_timings_but_keeps_text():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("f()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBOR", "text/plain": "<Figure size 750x340 with 2 Axes>"})])
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00"}
    glued = nbformat.v4.new_code_cell("glue('fig', fig)", outputs=[nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/image/png": "iVBOR",
                              "application/papermill.record/text/plain": "<Figure size 750x340 with 1 Axes>"})])
    nb.cells = [cell, glued]
    first, second = nbformat.reads(nbformat.writes(tool._strip(nb)), as_version=4).cells
    assert first["outputs"][0]["data"] == {"text/plain": "<Figure size 750x340 with 2 Axes>"}
    assert second["outputs"][0]["data"] == {
        "application/papermill.record/text/plain": "<Figure size 750x340 with 1 Axes>"}
    assert "execution" not in first["metadata"]
    assert (first["id"], second["id"]) == ("cell-0", "cell-1")  # stable, so re-recording is diff-quiet


def test_cache_guard_clears_the_execution_cache_only_when_the_library_changes(tree):
    cache = tree / "_build/.jupyter_cache"
    tool.cache_guard()                      # first build: records the fingerprint
    cache.mkdir()
    tool.cache_guard()                      # nothing changed: the cache stays
    assert cache.exists()
    (tree / "lib/deepgrad/__init__.py").write_text("x = 2\n")
    tool.cache_guard()                      # deepgrad changed: every chapter must re-run
    assert not cache.exists()
    cache.mkdir()
    (tree / "requirements.txt").write_text("torch==2.14.0\n")
    tool.cache_guard()                      # so must a change of pins
    assert not cache.exists()


def test_every_notebook_chapter_of_the_book_is_in_the_toc_and_has_a_reference():
    toc = (ROOT / "_toc.yml").read_text()
    for stem in tool.notebook_chapters():
        assert f"chapters/{stem}" in toc, f"chapters/{stem}.md is not in _toc.yml"
        assert (ROOT / "tests/reference" / f"{stem}.ipynb").exists(), f"run `make reference CHAPTERS={stem}`"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_tool", ROOT / "tools" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_measures_a_chapter_in_a_fresh_kernel(tmp_path):
    bench = _bench()
    chapter = tmp_path / "big.md"
    # a chapter that holds about 200 MiB for half a second: the sampler must see it
    chapter.write_text(HEADER.replace("print(CODE)", "import time\nblock = b\"x\" * (200 * 2**20)\ntime.sleep(0.5)"))
    seconds, mib = bench.run_chapter(chapter)
    assert seconds > 0.5
    assert mib > 200


def _sleeping_chapter(tree, *seconds):
    cells = "".join(f"\n```{{code-cell}} ipython3\nimport time\ntime.sleep({s})\nprint({s})\n```\n" for s in seconds)
    (tree / "chapters/ch.md").write_text(HEADER.split("```{code-cell}")[0] + cells)


def test_reference_stops_a_chapter_over_the_limit_in_total_and_records_nothing(tree, monkeypatch, capsys):
    # each cell well under the limit, the two together over it
    _sleeping_chapter(tree, 1.0, 1.0)
    monkeypatch.setattr(tool, "LIMIT_SECONDS", 1.5)
    with pytest.raises(SystemExit, match=r"not recorded: chapters/ch.md: a chapter's cells must run in 1.5 s"):
        tool.record(["ch"])
    assert re.search(r"chapters/ch.md stopped after \d+ s: over the limit of 1.5 s", capsys.readouterr().out)
    assert not (tree / "tests/reference/ch.ipynb").exists()


def test_reference_prints_a_chapter_time_and_whether_it_met_the_aim(tree, monkeypatch, capsys):
    _sleeping_chapter(tree, 0.2, 0.2)
    tool.record(["ch"])
    printed = capsys.readouterr().out
    seconds = float(re.search(r"executed chapters/ch.md in ([\d.]+) s\n", printed).group(1))
    assert 0.4 <= seconds < tool.LIMIT_SECONDS and (tree / "tests/reference/ch.ipynb").exists()
    monkeypatch.setattr(tool, "AIM_SECONDS", 0.1)
    tool.record(["ch"])
    assert re.search(r"executed chapters/ch.md in [\d.]+ s, over the 0.1 s a chapter aims at", capsys.readouterr().out)


def _fake_clock(monkeypatch, step: float, shutdown: float) -> list[float]:
    """A clock that moves ``step`` s at every reading and ``shutdown`` s once the cells are done (the
    kernel's shutdown, inside ``execute``); returns the list of what each cell was given to run in."""
    now = [0.0]

    def clock() -> float:
        reading = now[0]
        now[0] += step
        return reading

    real = nbclient.NotebookClient
    given: list[float] = []

    def client(nb, **kwargs):
        time_left = kwargs["timeout_func"]

        def recording(cell):
            given.append(time_left(cell))
            return given[-1]

        made = real(nb, **{**kwargs, "timeout_func": recording})
        execute = made.execute

        def execute_then_shut_down(**options):
            result = execute(**options)
            now[0] += shutdown
            return result

        made.execute = execute_then_shut_down
        return made

    monkeypatch.setattr(tool, "_clock", clock)
    monkeypatch.setattr(nbclient, "NotebookClient", client)
    return given


def test_the_limit_counts_from_the_first_cell_not_the_kernel_start(monkeypatch):
    """With a clock that jumps 50 s at every reading, the cells get what is left of the limit."""
    given = _fake_clock(monkeypatch, step=50, shutdown=0)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")])
    # readings: first cell starts at 0 (all 120 s left), ends at 50; second starts at 100 (20 s left), ends at 150
    with pytest.raises(tool.OverLimit, match="took 150 s"):
        tool.execute_within_limit(nb)
    assert given == [tool.LIMIT_SECONDS, tool.LIMIT_SECONDS - 100]


def test_the_chapter_time_ends_with_its_last_cell_not_the_kernel_shutdown(monkeypatch):
    given = _fake_clock(monkeypatch, step=10, shutdown=1000)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), nbformat.v4.new_code_cell("2")])
    # readings: 0 and 10 (first cell), 20 and 30 (second); the 1000 s after the last cell are not counted
    assert tool.execute_within_limit(nb) == 30
    assert given == [tool.LIMIT_SECONDS, tool.LIMIT_SECONDS - 20]


class _Log:
    """Stands in for MyST-NB's document logger: keeps the messages."""

    def __init__(self):
        self.messages = []

    def _keep(self, message, *args, **kwargs):
        self.messages.append(str(message))

    info = warning = error = debug = _keep


def _build_lookup(tree):
    """What the book build does with a chapter in `execute_notebooks: cache` mode: MyST-NB's reader,
    then MyST-NB's cache client (which takes the cached execution, or executes and caches)."""
    from myst_nb.core.config import NbParserConfig
    from myst_nb.core.execute import create_client
    from myst_nb.core.read import create_nb_reader
    from myst_parser.config.main import MdParserConfig

    path = tree / "chapters/ch.md"
    text = path.read_text()
    reader = create_nb_reader(str(path), MdParserConfig(), NbParserConfig(), text)
    config = NbParserConfig(execution_mode="cache", execution_cache_path=str(tree / "_build/.jupyter_cache"))
    log = _Log()
    with create_client(reader.read(text), str(path), config, log, reader.read_fmt) as client:
        return client.exec_metadata, client.notebook, log.messages


TAGGED_CELL = """
```{code-cell} ipython3
:tags: [remove-cell]

assert True
```
"""


def test_a_staged_execution_is_what_the_book_build_finds_and_it_executes_nothing(tree):
    _chapter(tree, "1")
    (tree / "chapters/ch.md").write_text((tree / "chapters/ch.md").read_text() + TAGGED_CELL)
    printed = "printed by the staged run, not by print(1)\n"
    outputs = [[{"output_type": "stream", "name": "stdout", "text": printed}], []]
    tool.stage("ch", outputs, seconds=12.5, sources=["print(1)", "assert True"])
    metadata, notebook, messages = _build_lookup(tree)
    assert any("Using cached notebook" in m for m in messages), messages
    assert not any("Executing notebook" in m for m in messages), messages
    assert metadata["runtime"] == 12.5 and metadata["succeeded"]   # the execution report shows nbval's run
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == printed
    assert code[1].metadata["tags"] == ["remove-cell"]
    assert notebook.metadata["language_info"]["pygments_lexer"] == "ipython3"


def test_a_chapter_changed_after_staging_is_not_found_in_the_cache(tree):
    from jupyter_cache import get_cache

    _chapter(tree, "1")
    tool.stage("ch", [[]], sources=["print(1)"])
    cache = get_cache(str(tree / "_build/.jupyter_cache"))
    cache.match_cache_notebook(tool.book_notebook(tree / "chapters/ch.md"))  # found
    _chapter(tree, "2")
    with pytest.raises(KeyError):
        cache.match_cache_notebook(tool.book_notebook(tree / "chapters/ch.md"))


def test_stage_refuses_outputs_of_other_code(tree):
    _chapter(tree, "1")
    with pytest.raises(ValueError, match="sources: the executed code differs from chapters/ch.md"):
        tool.stage("ch", [[]], sources=["print(2)"])
    with pytest.raises(ValueError, match="outputs: chapters/ch.md has 1 code cells, got outputs for 2"):
        tool.stage("ch", [[], []])
    assert not (tree / "_build/.jupyter_cache").exists()


def test_bench_prints_the_report_overhead_against_its_budget_or_says_it_was_not_measured(tmp_path, capsys,
                                                                                         monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    bench.print_overhead(tmp_path / "tools" / "report_overhead.py")
    assert "| not measured: tools/report_overhead.py is absent | 1.10 | - |" in capsys.readouterr().out
    tool = tmp_path / "report_overhead.py"
    tool.write_text("def measure():\n    return {'ratio': 1.234, 'budget': 1.10, 'width': 64}\n")
    bench.print_overhead(tool)
    assert "| gradient report overhead (x plain step) | 1.23 | 1.10 | **no** |" in capsys.readouterr().out
    tool.write_text("def measure():\n    return {'ratio': 1.05, 'budget': 1.10}\n")
    bench.print_overhead(tool)
    assert "| 1.05 | 1.10 | yes |" in capsys.readouterr().out


def test_execute_runs_what_the_cache_lacks_in_parallel_and_the_build_then_executes_nothing(tree):
    _chapter(tree, "6 * 7")
    (tree / "chapters/broken.md").write_text(HEADER.replace("print(CODE)", "raise RuntimeError('broken')"))
    assert tool.uncached() == ["broken", "ch"]
    assert tool.execute(jobs=2) == ["ch"]             # the broken chapter is left to the build
    assert tool.uncached() == ["broken"]
    metadata, notebook, messages = _build_lookup(tree)
    assert any("Using cached notebook" in m for m in messages), messages
    assert [c for c in notebook.cells if c.cell_type == "code"][0].outputs[0]["text"] == "42\n"
    assert metadata["runtime"] > 0
    (tree / "chapters/broken.md").unlink()
    assert tool.execute(jobs=2) == []                 # nothing left to execute
    with pytest.raises(ValueError, match="jobs must be at least 1, got 0"):
        tool.execute(jobs=0)
    with pytest.raises(TypeError, match="jobs must be an int, got str"):
        tool.execute(jobs="2")


def test_split_balances_the_chapters_over_the_processes_and_keeps_their_order():
    weights = {"a": 10.0, "b": 50.0, "c": 30.0, "d": 25.0, "e": 5.0}
    groups = tool.split(weights, 2)
    assert sorted(s for group in groups for s in group) == sorted(weights)   # each chapter exactly once
    loads = sorted(sum(weights[s] for s in group) for group in groups)
    assert loads == [60.0, 60.0]
    assert all(group == sorted(group) for group in groups)                    # chapter order kept
    assert tool.split(weights, 1) == [list(weights)]
    assert tool.split({"a": 1.0}, 4) == [["a"]]                               # no empty process



def test_executions_for_the_book_set_deepgrad_book(monkeypatch):
    """Every execution made for the book runs with DEEPGRAD_BOOK=1, which the kernels inherit:
    tools/chapters.py (reference, execute, nbval), nbval's conftest, the Makefile's build and the
    book's Sphinx extension (a `jupyter-book build` started by hand)."""
    import os

    monkeypatch.delenv("DEEPGRAD_BOOK", raising=False)
    tool.book_mode()
    assert os.environ["DEEPGRAD_BOOK"] == "1"
    main = (ROOT / "tools" / "chapters.py").read_text().split('if __name__ == "__main__":')[1]
    assert 'if command in ("reference", "execute", "nbval"):\n        book_mode()' in main
    assert "JB     := DEEPGRAD_BOOK=1 " in (ROOT / "Makefile").read_text()
    assert 'os.environ["DEEPGRAD_BOOK"] = "1"' in (ROOT / "conftest.py").read_text()
    monkeypatch.delenv("DEEPGRAD_BOOK")
    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        import book_html
    finally:
        sys.path.remove(str(ROOT / "_ext"))

    class App:
        def add_config_value(self, *args):
            pass

        def connect(self, *args, **kwargs):
            pass

        def add_js_file(self, *args, **kwargs):
            pass

    book_html.setup(App())
    assert os.environ["DEEPGRAD_BOOK"] == "1"
