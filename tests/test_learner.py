"""Learner notebooks (tools/learner.py): what a learner sees in Jupyter, Colab and Binder.

Every path a learner takes opens the same notebook: the page's ``.ipynb`` download, Colab and Binder
(``_ext/book_html.py`` points both at the ``notebooks`` branch, which ``tools/publish.py notebooks``
fills with the learner notebooks and what ``binder/`` installs). The checks here convert a small
fixture notebook, then, when a built book is there (``make book``), every chapter of it, and count in
what JupyterLab shows (the Markdown cells): raw MyST roles, directives, directive options and
targets, glue keys left unresolved, and figures missing. Each count must be 0.

The chapter sources (``chapters/*.md``) opened through jupytext, as Binder on ``main`` or a local
JupyterLab opens them, still show their MyST markup; there the promise is only that every glued number
and figure is shown under its code (``dg.glue``/``glue_figure`` outside the book), which
:func:`test_chapters_glue_only_through_deepgrad` guards.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}_tool", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


learner = _tool("learner")
publish = _tool("publish")

ROLE = re.compile(r"\{[a-z][\w:-]*\}`")
DIRECTIVE = re.compile(r"^\s*(?:>\s*)*(`{3,}|:{3,})\{[\w:-]+\}", re.MULTILINE)
OPTION = re.compile(r"^\s*(?:>\s*)*:[a-z][\w-]*:(\s|$)", re.MULTILINE)
TARGET = re.compile(r"^\s*\([\w:.-]+\)=\s*$", re.MULTILINE)
CODE_BLOCK = re.compile(r"^(\s*(?:>\s*)*)(`{3,})[^\n]*\n.*?^\1\2\s*$", re.MULTILINE | re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\(data:image/(png|jpeg|svg\+xml);base64,[A-Za-z0-9+/=]{100,}\)")
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(200)).decode()


def raw_myst(markdown: str) -> Counter:
    """What JupyterLab would show raw in a Markdown text: MyST roles, directives, options, targets."""
    text = CODE_BLOCK.sub("", markdown)  # a code block shows code, not markup
    return Counter({"roles": len(ROLE.findall(text)), "directives": len(DIRECTIVE.findall(markdown)),
                    "options": len(OPTION.findall(text)), "targets": len(TARGET.findall(text))})


def learner_counts(nb: nbformat.NotebookNode, figures: int) -> Counter:
    """Raw MyST, glue roles and directives left unresolved, and figures missing, in a learner notebook."""
    markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    counts = raw_myst(markdown)
    counts["unresolved glue keys"] = len(re.findall(r"\{glue[\w:-]*\}", CODE_BLOCK.sub("", markdown)))
    counts["missing figures"] = max(0, figures - len(IMAGE.findall(markdown)))
    return counts


def _code(source: str, tags: list[str] | None = None, outputs: list | None = None) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, outputs=outputs or [])
    if tags:
        cell.metadata["tags"] = tags
    return cell


def _glue_output(name: str, data: dict) -> dict:
    prefix = learner.GLUE_PREFIX
    return nbformat.v4.new_output("display_data", data={prefix + k: v for k, v in data.items()},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def fixture_book() -> learner.Book:
    return learner.Book(
        base_url="https://someone.github.io/book/", repository="https://github.com/someone/book",
        macros={"diag": r"\operatorname{diag}"},
        labels={"sec-flow": ("chapters/demo", "sec-flow", "How the gradient flows"),
                "fig-demo-curve": ("chapters/demo", "fig-demo-curve", "A curve"),
                "ex-demo-one": ("chapters/demo", "ex-demo-one", ""),
                "prop-demo": ("chapters/demo", "prop-demo", "")},
        numbers={"fig-demo-curve": ("figure", "3.1"), "ex-demo-one": ("exercise", "3.2"),
                 "prop-demo": ("proposition", "3.1")},
        equations={"eq-demo": ("chapters/demo", "3.4")},
        terms={"vanishing gradient": ("glossary", "term-Vanishing-gradient")},
        citations={"glorot2010": ("Glorot and Bengio", "2010"), "he2015": ("He et al.", "2015")},
        numfig_format={"figure": "Fig. %s", "exercise": "Exercise %s", "proposition": "proposition %s"},
    )


def fixture_notebook() -> nbformat.NotebookNode:
    md = nbformat.v4.new_markdown_cell
    cells = [
        md("(chap-demo)=\n# A demo chapter\n\n:::{admonition} What you will learn\n:class: tip\n\n"
           "- how a {term}`vanishing gradient <vanishing gradient>` looks\n:::"),
        _code('import importlib.util\n\nif importlib.util.find_spec("deepgrad") is None:\n'
              '    %pip install --quiet "deepgrad @ git+https://github.com/OWNER/REPO"', ["remove-cell"]),
        _code("import deepgrad as dg\nratio = 0.5\nprint('ratio', ratio)",
              outputs=[nbformat.v4.new_output("stream", name="stdout", text="ratio 0.5\n")]),
        _code('helper = ratio * 2\nassert ratio > 0\ndg.glue("ratio", ratio)', ["remove-cell"],
              outputs=[_glue_output("ratio", {"text/plain": "0.5"}),
                       _glue_output("tiny", {"text/markdown": "8.9 × 10⁻⁸", "text/plain": "<Markdown>"}),
                       _glue_output("fig-curve", {"image/png": PNG, "text/plain": "<Figure>"})]),
        _code('assert ratio < 1\ndg.glue("again", ratio)', ["remove-cell"]),
        md("(sec-flow)=\n## How it flows\n\nThe ratio is {glue}`ratio`, or {glue:text}`ratio:.2f`; the gradient "
           "is {glue}`tiny`. See {numref}`fig-demo-curve`, {ref}`sec-flow`, {ref}`this section <sec-flow>`, "
           "{eq}`eq-demo`, {prf:ref}`prop-demo`, {cite:t}`glorot2010` and {cite:p}`glorot2010,he2015`.\n\n"
           "$$\n\\diag(x)\n$$ (eq-demo)\n\n"
           "```{glue:figure} fig-curve\n:name: fig-demo-curve\n:alt: A falling curve.\n\nThe curve falls.\n```\n\n"
           "```{prf:proposition} A bound\n:label: prop-demo\n\nIt shrinks.\n```\n\n"
           "```{prf:proof}\nBy the chain rule.\n```\n\n```python\n{glue}`kept in a code block`\n```"),
        _code("print(helper)", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1.0\n")]),
        md("## Exercises\n\n```{exercise}\n:label: ex-demo-one\n\nDouble the ratio.\n```\n\n"
           "````{solution-start} ex-demo-one\n:class: dropdown\n````\n\nMultiply by two:"),
        _code("doubled = 2 * ratio\nprint(doubled)",
              outputs=[nbformat.v4.new_output("stream", name="stdout", text="1.0\n")]),
        md("````{solution-end}\n````\n\n```{solution} ex-demo-one\nOr add it to itself.\n```"),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def converted():
    nb, problems = learner.convert(fixture_notebook(), fixture_book(), "demo")
    assert problems == []
    return nb


def test_fixture_has_no_raw_myst_no_missing_figure_no_unresolved_glue(converted):
    counts = learner_counts(converted, figures=1)
    assert +counts == Counter(), counts  # all 0
    # and the counter sees what it is meant to see: the same count on the source is far from 0
    source = learner_counts(fixture_notebook(), figures=1)
    assert source["roles"] >= 10 and source["directives"] >= 6 and source["missing figures"] == 1
    assert source["unresolved glue keys"] >= 3


def test_fixture_text_reads_like_the_book(converted):
    text = "\n".join(c.source for c in converted.cells if c.cell_type == "markdown")
    book = "https://someone.github.io/book/"
    assert "The ratio is 0.5, or 0.50; the gradient is 8.9 × 10⁻⁸." in text
    assert f"See [Fig. 3.1]({book}chapters/demo.html#fig-demo-curve)" in text
    assert f"[How the gradient flows]({book}chapters/demo.html#sec-flow)" in text
    assert f"[this section]({book}chapters/demo.html#sec-flow)" in text
    assert f"[(3.4)]({book}chapters/demo.html#equation-eq-demo)" in text
    assert "[Proposition 3.1]" in text
    assert f"[Glorot and Bengio (2010)]({book}references.html)" in text
    assert "([Glorot and Bengio, 2010; He et al., 2015]" in text
    assert f"[vanishing gradient]({book}glossary.html#term-Vanishing-gradient)" in text
    assert "\\operatorname{diag}(x)\n\\tag{3.4}\n$$" in text  # the macro written out, the number tagged
    assert "**Fig. 3.1** The curve falls." in text
    assert "> **What you will learn**" in text and "> **Proposition 3.1 (A bound).** It shrinks." in text
    assert "*Proof.* By the chain rule." in text
    assert "```python\n{glue}`kept in a code block`\n```" in text  # code blocks are left as they are
    assert converted.cells[0].source.startswith("$$\\newcommand{\\diag}{\\operatorname{diag}}$$")


def test_fixture_exercises_and_solutions(converted):
    markdown = [c.source for c in converted.cells if c.cell_type == "markdown"]
    assert any("> **Exercise 3.2**\n>\n> Double the ratio." in s for s in markdown)
    gated = next(s for s in markdown if "Multiply by two" in s)
    assert gated.startswith("<details>\n<summary>Solution to Exercise 3.2</summary>")
    assert "```python\ndoubled = 2 * ratio\nprint(doubled)\n```" in gated and "```text\n1.0\n```" in gated
    assert gated.rstrip().endswith("</details>")
    plain = next(s for s in markdown if "Or add it to itself" in s)
    assert plain.startswith("<details>\n<summary>Solution to Exercise 3.2</summary>")
    code = [c.source for c in converted.cells if c.cell_type == "code"]
    assert not any("doubled" in s for s in code)  # "Run All" does not run solutions


def test_fixture_hidden_cells(converted):
    code = [c for c in converted.cells if c.cell_type == "code"]
    sources = [c.source for c in code]
    assert not any("again" in s for s in sources)  # only checks and glues: dropped
    assert any("helper = ratio * 2" in s for s in sources)  # binds `helper`, read later: kept
    install = next(c for c in code if "pip install" in c.source)
    assert "git+https://github.com/someone/book" in install.source and "OWNER/REPO" not in install.source
    assert "remove-cell" not in install.metadata.get("tags", [])
    assert code[1].outputs[0]["text"] == "ratio 0.5\n"  # the build's outputs are kept
    kept_glue = [o for c in code for o in c.outputs if "scrapbook" in o.get("metadata", {})]
    assert kept_glue == []  # glue records are in the text, not left as outputs Jupyter cannot show
    nbformat.validate(converted)


@pytest.mark.parametrize("source, later, expected", [
    ("assert x > 0", set(), True),
    ('y = x + 1\nassert y > 1\ndg.glue("y", y)', set(), True),
    ("y = x + 1", {"y"}, False),                      # a later cell reads y
    ("dg.seed_everything(1)\nassert True", set(), False),  # changes the random state
    ("model.weight = w\nassert True", set(), False),  # changes an object made earlier
    ("history.append(1)", set(), False),
    ("%pip install deepgrad", set(), False),
    ('if importlib.util.find_spec("deepgrad") is None:\n'
     '    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "deepgrad[chapters]"], check=True)',
     set(), False),                                 # the chapters' install cell: pip in a subprocess
    ("for k in d:\n    assert d[k] > 0\n    dg.glue(k, d[k])", set(), True),
])
def test_droppable(source, later, expected):
    assert learner.droppable(source, later) is expected


def test_unknown_glue_key_and_label_are_errors():
    book = fixture_book()
    glued = {}
    with pytest.raises(learner.LearnerError, match="glue key 'nope' not found"):
        learner.convert_roles("{glue}`nope`", book, glued)
    with pytest.raises(learner.LearnerError, match="unknown label 'nowhere'"):
        learner.convert_roles("{ref}`nowhere`", book, glued)
    with pytest.raises(learner.LearnerError, match="unknown reference"):
        learner.convert_roles("{cite:p}`nobody2020`", book, glued)


def test_unknown_directive_is_reported():
    ctx = learner.Context(fixture_book(), {})
    out = learner.convert_markdown("```{mystery} x\nbody\n```", ctx)
    assert ctx.problems == ["unknown directive {mystery}"] and raw_myst(out)["directives"] == 1


def test_pages_url_from_the_repository():
    assert learner._pages_url("https://github.com/Someone/grad-book") == "https://someone.github.io/grad-book/"
    assert learner._pages_url("https://gitlab.com/x/y") == ""


def test_binder_and_colab_buttons_open_the_learner_notebook():
    sys.path.insert(0, str(ROOT / "_ext"))
    try:
        import book_html
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    binder = "https://mybinder.org/v2/gh/someone/book/main?urlpath=lab/tree/chapters/backprop.md"
    colab = "https://colab.research.google.com/github/someone/book/blob/main/chapters/backprop.md"
    context = {"header_buttons": [{"label": "launch-buttons", "buttons": [
        {"text": "Binder", "url": binder}, {"text": "Colab", "url": colab}]}]}

    class App:
        class config:
            colab_notebooks_branch = "notebooks"

    book_html._launch_and_bibliography(App, "chapters/backprop", "page.html", context, None)
    urls = [b["url"] for b in context["header_buttons"][0]["buttons"]]
    assert urls == ["https://mybinder.org/v2/gh/someone/book/notebooks?urlpath=lab/tree/chapters/backprop.ipynb",
                    "https://colab.research.google.com/github/someone/book/blob/notebooks/chapters/backprop.ipynb"]


def test_chapters_glue_only_through_deepgrad():
    """Outside the book only dg.glue and glue_figure show what they glue: chapters use nothing else."""
    for path in sorted((ROOT / "chapters").glob("*.md")):
        for cell in jupytext.read(path).cells:
            if cell.cell_type != "code":
                continue
            assert "myst_nb" not in cell.source, f"{path.name}: glue through dg.glue, not myst_nb"
            tree = ast.parse(learner._code_for_ast(cell.source))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "glue":
                    pytest.fail(f"{path.name}: a bare glue(...) call; use dg.glue")


# --- every chapter of a built book --------------------------------------------------------------

BUILT = (ROOT / "_build" / ".doctrees" / "environment.pickle").exists() and (
    ROOT / "_build" / ".jupyter_cache").exists()


@pytest.fixture(scope="module")
def built_book():
    if not BUILT:
        pytest.skip("no built book (make book): only the fixture notebook is converted")
    return learner.Book.from_build(ROOT)


@pytest.mark.built_book
@pytest.mark.parametrize("stem", learner.book_stems(ROOT))
def test_built_chapter_as_a_learner_sees_it(built_book, stem, tmp_path):
    """The learner notebook of a built chapter, as Binder, Colab and the download open it: all counts 0."""
    source = (ROOT / "chapters" / f"{stem}.md").read_text()
    figures = len(re.findall(r"^\s*(`{3,}|:{3,})\{glue:figure\}", source, flags=re.MULTILINE))
    nb, problems = learner.convert(learner.executed_chapter(stem, ROOT), built_book, stem,
                                   learner.built_glue(stem, ROOT))
    assert problems == []
    # what Binder opens: the notebook as published on the notebooks branch, read back from disk
    (tmp_path / "learner").mkdir()
    nbformat.write(nb, tmp_path / "learner" / f"{stem}.ipynb")
    publish.collect_notebooks(tmp_path / "branch", tmp_path / "learner", [stem])
    opened = nbformat.read(tmp_path / "branch" / "chapters" / f"{stem}.ipynb", as_version=4)
    counts = learner_counts(opened, figures)
    print(f"{stem}: {dict(counts)}")
    assert +counts == Counter(), counts
    # the first code cell installs deepgrad where it is missing (Colab), as the chapter's does
    first_code = next(cell for cell in opened.cells if cell.cell_type == "code")
    assert learner.is_install_cell(first_code.source) and "deepgrad[chapters]" in first_code.source, \
        f"{stem}: the learner notebook does not start by installing deepgrad"
    # nothing the kept code reads is bound only by a dropped cell or a solution
    bound_kept, read_kept = set(), set()
    for cell in opened.cells:
        if cell.cell_type == "code":
            tree = ast.parse(learner._code_for_ast(cell.source))
            read_kept |= learner.names_read(tree) - bound_kept
            bound_kept |= learner.names_bound(tree)
    chapter = jupytext.read(ROOT / "chapters" / f"{stem}.md")
    bound_all = set()
    for cell in chapter.cells:
        if cell.cell_type == "code":
            bound_all |= learner.names_bound(ast.parse(learner._code_for_ast(cell.source)))
    lost = (read_kept & bound_all) - bound_kept
    assert not lost, f"{stem}: kept code reads names only dropped cells or solutions bind: {sorted(lost)}"
