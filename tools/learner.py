"""Learner notebooks: every chapter as a plain Jupyter notebook that reads like the book.

    python tools/learner.py [STEM ...]   after the book build: write _build/learner/<stem>.ipynb

A chapter is a MyST notebook; Jupyter, Binder and Colab show its MyST markup raw and its glued numbers
and figures nowhere. This turns each chapter of a built book into a notebook that needs no MyST:

- the chapter's cells with the outputs of the build's execution (MyST-NB's execution cache);
- glued numbers written into the text, glued figures embedded as images with their number and
  caption (as data URIs: JupyterLab shows them, and so does Colab, which ignores cell attachments);
- cross-references (``{ref}``, ``{numref}``, ``{eq}``, ``{prf:ref}``), citations and glossary terms turned
  into text with links to the HTML book (its address comes from ``html.baseurl`` in ``_config.yml``,
  else the GitHub Pages address of ``repository.url``, which ``tools/publish.py set-repository`` fills);
- admonitions, propositions, proofs and exercises as plain Markdown (block quotes), each solution
  collapsed in a ``<details>`` block under its exercise. A solution's code is written there as a code
  block followed by the output it printed in the build, not as a code cell: "Run All" then runs the
  chapter, not its solutions (as in the book, a learner opens a solution after trying), and the
  solution still reads as in the book. Nothing after the exercises uses a solution's names (checked);
- hidden cells (``remove-cell``) that only check or glue dropped: a hidden cell is kept when a later
  cell reads a name it binds or when it changes state that later cells see (seeds, training,
  in-place changes), and the install cell is kept, pointing at the repository;
- the book's TeX macros (``_config.yml``) defined in a first Markdown cell, and written out where used.

Outside a build of the book (``DEEPGRAD_BOOK`` unset) ``dg.glue`` and ``glue_figure`` show their values
and figures where they are made, so a learner who runs the notebook sees them again under the code.

The same notebooks are the page's ``.ipynb`` download (copied over the executed notebook the theme
offers in ``_build/html/_sources/``), and ``tools/publish.py notebooks`` publishes them on the branch
that the Colab and Binder buttons open (``_ext/book_html.py``).
"""

from __future__ import annotations

import ast
import base64
import copy
import json
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
OUTPUT = BUILD / "learner"
HTML = BUILD / "html"
GLUE_PREFIX = "application/papermill.record/"
PLACEHOLDER = "OWNER/REPO"
#: Admonition directives and the title each gets when it has none.
ADMONITIONS = {name: name.capitalize() for name in (
    "note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error", "seealso")}
ADMONITIONS["seealso"] = "See also"
#: sphinx-proof's directives (``prf:<kind>``) that are numbered statements.
PROOF_KINDS = ("proposition", "lemma", "theorem", "corollary", "definition", "remark", "example",
               "conjecture", "axiom", "criterion", "algorithm", "property", "observation", "assumption",
               "notation")
#: A hidden cell that calls one of these changes state later cells see: it is kept.
STATEFUL_CALLS = re.compile(r"seed|manual_seed|backward|\bstep\b|zero_grad|train|fit|loop|rand|normal_|"
                            r"uniform_|append|extend|update|insert|pop|add_|copy_|mul_|fill_|setattr|use_style")
GLUE_CALLS = {"glue", "glue_figure", "glue_range", "glue_text"}
ROLE = re.compile(r"\{(?P<name>[a-z][\w:-]*)\}`(?P<body>[^`]*)`")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
OPTION = re.compile(r"^\s*:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
TARGET = re.compile(r"^\s*\((?P<label>[\w:.-]+)\)=\s*$")
LABELLED_MATH = re.compile(r"^\$\$[ \t]*\((?P<label>[\w:.-]+)\)[ \t]*$")


class LearnerError(ValueError):
    """A chapter cannot be converted (an unknown glue key or label); the message says which."""


@dataclass
class Book:
    """What the conversion knows about the whole book: addresses, numbers, citations, macros."""

    base_url: str = ""
    repository: str = ""
    macros: dict[str, str] = field(default_factory=dict)
    #: label -> (docname, anchor, title)
    labels: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: label -> (kind, number as text), kind as in the book's numfig_format (figure, exercise, ...)
    numbers: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: equation label -> number as text
    equations: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: glossary term (lower case) -> (docname, anchor)
    terms: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: BibTeX key -> (authors as cited, year)
    citations: dict[str, tuple[str, str]] = field(default_factory=dict)
    numfig_format: dict[str, str] = field(default_factory=lambda: {"figure": "Fig. %s"})

    def url(self, docname: str, anchor: str = "") -> str:
        page = f"{self.base_url}{docname}.html"
        return f"{page}#{anchor}" if anchor else page

    def number_text(self, label: str) -> str:
        kind, number = self.numbers[label]
        form = self.numfig_format.get(kind) or f"{kind.capitalize()} %s"
        return (form[0].upper() + form[1:]) % number

    @classmethod
    def from_config(cls, root: Path = ROOT) -> Book:
        """The book's addresses, macros and citations (no build needed; no cross-reference numbers)."""
        config = yaml.safe_load((root / "_config.yml").read_text()) or {}
        repository = (config.get("repository") or {}).get("url", "")
        base = (config.get("html") or {}).get("baseurl") or _pages_url(repository)
        sphinx = (config.get("sphinx") or {}).get("config") or {}
        macros = ((sphinx.get("mathjax3_config") or {}).get("tex") or {}).get("macros") or {}
        book = cls(base_url=base.rstrip("/") + "/" if base else "", repository=repository,
                   macros={name: (value if isinstance(value, str) else value[0]) for name, value in macros.items()})
        for bib in config.get("bibtex_bibfiles") or []:
            book.citations.update(read_citations(root / bib))
        return book

    @classmethod
    def from_build(cls, root: Path = ROOT, environment: Path | None = None) -> Book:
        """:meth:`from_config` plus the labels, numbers and terms of the built book (Sphinx's environment)."""
        book = cls.from_config(root)
        path = environment or root / "_build" / ".doctrees" / "environment.pickle"
        if not path.exists():
            sys.exit(f"no {path.relative_to(root)}: build the book first (make book)")
        with path.open("rb") as handle:
            env = pickle.load(handle)
        std = env.domaindata["std"]
        book.labels = {label: tuple(value) for label, value in std["labels"].items()}
        for (kind, term), (docname, anchor) in std["objects"].items():
            if kind == "term":
                book.terms[term.lower()] = (docname, anchor)
        book.numfig_format = dict(env.config.numfig_format)
        for docname, kinds in env.toc_fignumbers.items():
            for kind, entries in kinds.items():
                for node_id, number in entries.items():
                    text = ".".join(map(str, number))
                    if kind == "displaymath":
                        book.equations[node_id.removeprefix("equation-")] = (docname, text)
                    else:
                        book.numbers[node_id] = (kind, text)
        for label, (docname, number) in env.domaindata.get("math", {}).get("objects", {}).items():
            book.equations.setdefault(label, (docname, str(number)))
        for label, entry in getattr(env, "proof_list", {}).items():  # sphinx-proof's labels and kinds
            kind = (entry.get("realtype") or entry.get("type") or "") if isinstance(entry, dict) else ""
            if label in book.numbers and kind:
                book.numbers[label] = (kind.removeprefix("prf:"), book.numbers[label][1])
            book.labels.setdefault(label, (entry.get("docname", ""), label, ""))
        return book


def _pages_url(repository: str) -> str:
    """``https://github.com/OWNER/NAME`` -> ``https://owner.github.io/NAME/`` (GitHub Pages)."""
    match = re.fullmatch(r"https?://github\.com/([^/]+)/([^/]+?)(\.git)?/?", repository or "")
    return f"https://{match[1].lower()}.github.io/{match[2]}/" if match else ""


def read_citations(bib: Path) -> dict[str, tuple[str, str]]:
    """BibTeX key -> (authors as an author-year citation names them, year)."""
    from pybtex.database import parse_file

    sys.path.insert(0, str(ROOT / "_ext"))  # the book's bibliography extension names authors as the HTML does
    try:
        from book_bibliography import cited_authors
    finally:
        sys.path.remove(str(ROOT / "_ext"))
    return {key: (cited_authors(entry), entry.fields.get("year", "n.d."))
            for key, entry in parse_file(str(bib)).entries.items()}


# --- glue -----------------------------------------------------------------------------------------

def extract_glue(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """Glue key -> its MIME bundle; the glue outputs are removed from the cells (as MyST-NB does)."""
    glued = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if not meta:
                kept.append(output)
                continue
            prefix = meta.get("mime_prefix", "")
            glued[meta["name"]] = {mime[len(prefix):]: data for mime, data in output.get("data", {}).items()}
        cell.outputs = kept
    return glued


def _text(data) -> str:
    return "".join(data) if isinstance(data, list) else str(data)


def glue_text(glued: dict[str, dict], body: str, role: str) -> str:
    """The text a ``{glue}``/``{glue:text}``/``{glue:md}`` role shows (MyST-NB's rules)."""
    key, spec = body.rsplit(":", 1) if role == "glue:text" and ":" in body else (body, "")
    key = key.strip()
    if key not in glued:
        raise LearnerError(f"glue key {key!r} not found")
    bundle = glued[key]
    if role != "glue:text" and "text/markdown" in bundle:
        return _text(bundle["text/markdown"]).strip()
    text = _text(bundle.get("text/plain", "")).strip()
    return format_plain(text, spec or "s") if role == "glue:text" else text


def format_plain(text: str, spec: str) -> str:
    """``{glue:text}`key:spec``: the stored text read as a Python literal, converted as the format
    type asks (``d`` an int, ``f``/``e``/``g``/``%`` a float, ``s`` a str) and formatted."""
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


# --- inline roles --------------------------------------------------------------------------------

def _split_target(body: str) -> tuple[str | None, str]:
    match = re.fullmatch(r"(?s)(?P<text>.*?)\s*<(?P<target>[^<>]+)>", body.strip())
    return (match["text"], match["target"]) if match else (None, body.strip())


def _link(text: str, url: str) -> str:
    return f"[{text}]({url})" if url else text


def convert_role(name: str, body: str, book: Book, glued: dict[str, dict]) -> str:
    """One MyST role as Markdown (text, or a link to the HTML book)."""
    if name.startswith("glue"):
        return glue_text(glued, body, name)
    text, target = _split_target(body)
    if name == "ref":
        if target not in book.labels:
            raise LearnerError(f"{{ref}} to unknown label {target!r}")
        docname, anchor, title = book.labels[target]
        return _link(text or title or target, book.url(docname, anchor))
    if name in ("numref", "prf:ref"):
        if target not in book.numbers:
            if name == "prf:ref" and target in book.labels and text:
                docname, anchor, _ = book.labels[target]
                return _link(text, book.url(docname, anchor))
            raise LearnerError(f"{{{name}}} to unknown or unnumbered label {target!r}")
        number = book.numbers[target][1]
        shown = (text.replace("%s", number).replace("{number}", number) if text else book.number_text(target))
        docname = book.labels.get(target, ("",))[0]
        return _link(shown, book.url(docname, target) if docname else "")
    if name == "eq":
        if target not in book.equations:
            raise LearnerError(f"{{eq}} to unknown equation {target!r}")
        docname, number = book.equations[target]
        return _link(text or f"({number})", book.url(docname, f"equation-{target}"))
    if name == "term":
        entry = book.terms.get(target.lower())
        if entry is None:
            raise LearnerError(f"{{term}} {target!r} is not in the glossary")
        return _link(text or target, book.url(*entry))
    if name.startswith("cite"):
        keys = [key.strip() for key in body.split(",") if key.strip()]
        unknown = [key for key in keys if key not in book.citations]
        if unknown:
            raise LearnerError(f"{{{name}}} of unknown reference(s) {', '.join(unknown)}")
        url = book.url("references") if book.base_url else ""
        if name == "cite:t":
            return "; ".join(_link(f"{book.citations[k][0]} ({book.citations[k][1]})", url) for k in keys)
        inner = "; ".join(f"{book.citations[k][0]}, {book.citations[k][1]}" for k in keys)
        return f"({_link(inner, url)})"
    if name == "doc":
        docname = target.removeprefix("/").removesuffix(".md")
        return _link(text or docname, book.url(docname))
    if name == "math":
        return f"${body}$"
    return f"{{{name}}}`{body}`"  # unknown: left as it is (the learner test reports it)


def convert_roles(text: str, book: Book, glued: dict[str, dict]) -> str:
    """Every role of a Markdown text, outside fenced code blocks."""
    return _outside_code(text, lambda line: ROLE.sub(lambda m: convert_role(m["name"], m["body"], book, glued), line))


def expand_macros(text: str, macros: dict[str, str]) -> str:
    """The book's TeX macros written out (``\\diag`` -> ``\\operatorname{diag}``), outside code blocks.

    The first cell defines them too, which is enough for JupyterLab; a renderer that typesets each
    cell on its own (Colab's or GitHub's may) would not see a definition made in another cell."""
    if not macros:
        return text
    pattern = re.compile(r"\\(" + "|".join(map(re.escape, sorted(macros, key=len, reverse=True))) + r")(?![A-Za-z])")
    return _outside_code(text, lambda line: pattern.sub(lambda m: macros[m[1]], line))


def _outside_code(text: str, change) -> str:
    """``change`` applied to every line of a Markdown text that is not inside a fenced code block."""
    out, in_fence = [], None
    for line in text.split("\n"):
        stripped = line.lstrip()
        fence = re.match(r"(`{3,}|~{3,})", stripped)
        if in_fence:
            out.append(line)
            if fence and stripped.startswith(in_fence):
                in_fence = None
            continue
        if fence and not stripped.startswith(fence[1] + "{"):
            in_fence = fence[1]
            out.append(line)
            continue
        out.append(change(line))
    return "\n".join(out)


# --- directives ----------------------------------------------------------------------------------

@dataclass
class Directive:
    name: str
    arg: str
    options: dict[str, str]
    body: str


def _parse_directive(lines: list[str], start: int) -> tuple[Directive, int] | None:
    """The directive opening at ``lines[start]`` and the index after its closing fence."""
    match = FENCE.match(lines[start])
    if not match:
        return None
    fence = match["fence"]
    index, options = start + 1, {}
    while index < len(lines) and (option := OPTION.match(lines[index])):
        options[option["key"]] = option["value"].strip()
        index += 1
    body, depth = [], 0
    while index < len(lines):
        line = lines[index]
        inner = FENCE.match(line)
        if inner and inner["fence"][0] == fence[0] and len(inner["fence"]) == len(fence):
            depth += 1
        elif line.strip() == fence and depth == 0:
            return Directive(match["name"], match["arg"].strip(), options, "\n".join(body).strip("\n")), index + 1
        elif line.strip() == fence:
            depth -= 1
        body.append(line)
        index += 1
    return Directive(match["name"], match["arg"].strip(), options, "\n".join(body).strip("\n")), index


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line.strip() else ">" for line in text.split("\n"))


def _figure(glued: dict[str, dict], key: str, alt: str, caption: str, number: str) -> str:
    if key not in glued:
        raise LearnerError(f"glue key {key!r} (a figure) not found")
    bundle = glued[key]
    mime = next((m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in bundle), None)
    if mime is None:
        raise LearnerError(f"glue key {key!r} holds no image")
    data = _text(bundle[mime]).replace("\n", "")
    if mime == "image/svg+xml":
        data = base64.b64encode(data.encode()).decode()
    alt = re.sub(r"\s+", " ", alt).replace("[", "(").replace("]", ")")
    label = f"**{number}** " if number else ""
    return f"![{alt}](data:{mime};base64,{data})\n\n{label}{caption}".rstrip()


@dataclass
class Context:
    book: Book
    glued: dict[str, dict]
    problems: list[str] = field(default_factory=list)


def convert_markdown(text: str, ctx: Context) -> str:
    """A Markdown cell of a chapter as plain Markdown (directives, targets, labelled maths, roles)."""
    lines, out, index = text.split("\n"), [], 0
    while index < len(lines):
        line = lines[index]
        if TARGET.match(line) or re.match(r"^%( |$)", line):  # (label)= targets and MyST comments
            index += 1
            continue
        labelled = LABELLED_MATH.match(line)
        if labelled and out:
            label = labelled["label"]
            number = ctx.book.equations.get(label, ("", ""))[1]
            # the opening $$ is above: close the equation with its number, as the book shows it
            out.append(f"\\tag{{{number}}}\n$$" if number else "$$")
            index += 1
            continue
        parsed = _parse_directive(lines, index) if FENCE.match(line) else None
        if parsed is None:
            out.append(line)
            index += 1
            continue
        directive, index = parsed
        out.append(render_directive(directive, ctx))
    return convert_roles("\n".join(out), ctx.book, ctx.glued)


def render_directive(d: Directive, ctx: Context) -> str:
    """One directive as plain Markdown; an unknown directive is left as it is (the test reports it)."""
    body = convert_markdown(d.body, ctx) if d.body else ""
    book = ctx.book
    if d.name == "admonition" or d.name in ADMONITIONS:
        title = d.arg or ADMONITIONS.get(d.name, "")
        return _quote(f"**{convert_roles(title, book, ctx.glued)}**\n\n{body}")
    if d.name.startswith("prf:") and d.name[4:] in PROOF_KINDS:
        kind = d.name[4:]
        label = d.options.get("label", "")
        number = f" {book.numbers[label][1]}" if label in book.numbers else ""
        title = f" ({convert_roles(d.arg, book, ctx.glued)})" if d.arg else ""
        return _quote(f"**{kind.capitalize()}{number}{title}.** {body}")
    if d.name == "prf:proof":
        return f"*Proof.* {body} $\\square$"
    if d.name == "exercise":
        label = d.options.get("label", "")
        heading = book.number_text(label) if label in book.numbers else "Exercise"
        title = f" ({convert_roles(d.arg, book, ctx.glued)})" if d.arg else ""
        return _quote(f"**{heading}{title}**\n\n{body}")
    if d.name == "solution":
        return details(solution_title(d.arg, book), body)
    if d.name == "glue:figure":
        name = d.options.get("name", "")
        number = book.number_text(name) if name in book.numbers else ""
        return _figure(ctx.glued, d.arg, d.options.get("alt", ""), body, number)
    if d.name in ("glue:md", "glue", "glue:any"):
        return convert_markdown(glue_text(ctx.glued, d.arg, "glue:md"), ctx)
    if d.name == "math":
        label = d.options.get("label", "")
        number = book.equations.get(label, ("", ""))[1]
        return f"$$\n{d.body}\n" + (f"\\tag{{{number}}}\n" if number else "") + "$$"
    if d.name in ("figure", "image"):
        return f"![{d.options.get('alt', '')}]({book.url('')}{d.arg})\n\n{body}".rstrip()
    ctx.problems.append(f"unknown directive {{{d.name}}}")
    return f"```{{{d.name}}} {d.arg}\n{d.body}\n```"


def solution_title(label: str, book: Book) -> str:
    return f"Solution to {book.number_text(label)}" if label in book.numbers else "Solution"


def details(summary: str, body: str) -> str:
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


# --- code cells ----------------------------------------------------------------------------------

def _code_for_ast(source: str) -> str:
    """Python source without IPython magics (``%pip``, ``!ls``), for the ast module."""
    return "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                     else line for line in source.split("\n"))


def names_bound(tree: ast.AST) -> set[str]:
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return bound


def names_read(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _called(node: ast.Call) -> str:
    return ast.unparse(node.func)


def changes_state(tree: ast.AST, bound: set[str]) -> bool:
    """Whether a cell visibly changes what later cells see, beyond the names it binds."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return True
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, (ast.Attribute, ast.Subscript)):
                        root = sub
                        while isinstance(root, (ast.Attribute, ast.Subscript)):
                            root = root.value
                        if not (isinstance(root, ast.Name) and root.id in bound):
                            return True  # changes an object made by an earlier cell
        if isinstance(node, ast.Call):
            name = _called(node)
            if name.split(".")[-1] in GLUE_CALLS:
                continue
            if STATEFUL_CALLS.search(name):
                return True
    return False


def is_install_cell(source: str) -> bool:
    """The chapters' first cell, which installs deepgrad where it is missing (``%pip`` or pip in a subprocess)."""
    return "pip install" in source or 'find_spec("deepgrad")' in source


def droppable(source: str, later_reads: set[str]) -> bool:
    """A hidden cell that only checks or glues: nothing it binds is read later, no state changes."""
    if is_install_cell(source):
        return False
    try:
        tree = ast.parse(_code_for_ast(source))
    except SyntaxError:
        return False
    bound = names_bound(tree)
    return not (bound & later_reads) and not changes_state(tree, bound)


def _outputs_markdown(outputs: list, glued: dict[str, dict]) -> str:
    """A code cell's outputs as Markdown (text blocks and images), for a solution written as text."""
    parts = []
    for output in outputs:
        if output.get("output_type") == "stream":
            parts.append(f"```text\n{_text(output.get('text', '')).rstrip()}\n```")
        elif "data" in output:
            data = output["data"]
            image = next((m for m in ("image/png", "image/jpeg") if m in data), None)
            if image:
                parts.append(f"![output](data:{image};base64,{_text(data[image]).replace(chr(10), '')})")
            elif "text/markdown" in data:
                parts.append(_text(data["text/markdown"]))
            elif "text/plain" in data:
                parts.append(f"```text\n{_text(data['text/plain']).rstrip()}\n```")
    return "\n\n".join(parts)


def _code_markdown(cell: nbformat.NotebookNode, glued: dict[str, dict]) -> str:
    code = f"```python\n{cell.source.rstrip()}\n```"
    printed = _outputs_markdown(cell.get("outputs", []), glued)
    return f"{code}\n\nIt prints:\n\n{printed}" if printed else code


# --- the notebook --------------------------------------------------------------------------------

SOLUTION_START = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution-start\}[ \t]*(?P<label>[\w:.-]*)[ \t]*$")
SOLUTION_END = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution-end\}")


def _split_gated(text: str) -> list[tuple[str, str]]:
    """A Markdown cell's text in parts: ("text", ...), ("start", label), ("end", "")."""
    lines, parts, buffer, index = text.split("\n"), [], [], 0
    while index < len(lines):
        start, end = SOLUTION_START.match(lines[index]), SOLUTION_END.match(lines[index])
        if start or end:
            parts.append(("text", "\n".join(buffer)))
            buffer = []
            fence = (start or end)["fence"]
            index += 1
            while index < len(lines) and OPTION.match(lines[index]):
                index += 1
            if index < len(lines) and lines[index].strip() == fence:
                index += 1
            parts.append(("start", start["label"]) if start else ("end", ""))
            continue
        buffer.append(lines[index])
        index += 1
    parts.append(("text", "\n".join(buffer)))
    return [(kind, value) for kind, value in parts if kind != "text" or value.strip()]


def macros_cell(book: Book) -> str:
    definitions = "".join(f"\\newcommand{{\\{name}}}{{{value}}}" for name, value in book.macros.items())
    return f"$${definitions}$$" if definitions else ""


def header_cell(stem: str, title: str, book: Book) -> str:
    page = book.url(f"chapters/{stem}") if book.base_url else ""
    where = f"[the book]({page})" if page else "the book"
    lines = [macros_cell(book), "",
             f"*This notebook is the chapter \u201c{title}\u201d of {where}, made from the book's build: the "
             "numbers and figures in the text are the build's. Run the cells (Run All) to compute them "
             "again; each glued number and figure is then also shown under the code that makes it.*"]
    return "\n".join(lines).strip()


def convert(nb: nbformat.NotebookNode, book: Book, stem: str,
            glued: dict[str, dict] | None = None) -> tuple[nbformat.NotebookNode, list[str]]:
    """The learner notebook of one executed chapter (outputs and glue outputs included).

    Returns the notebook and the problems found (unknown directives); unknown glue keys and labels
    raise :class:`LearnerError`.
    """
    nb = copy.deepcopy(nb)
    found = extract_glue(nb)
    glued = {**(glued or {}), **found}
    ctx = Context(book, glued)
    cells = nb.cells
    # later reads: the names every kept code cell after position i reads (hidden cells decided last first)
    keep = [True] * len(cells)
    reads_after: set[str] = set()
    for index in range(len(cells) - 1, -1, -1):
        cell = cells[index]
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        if "remove-cell" in tags and droppable(cell.source, reads_after):
            keep[index] = False
            continue
        try:
            reads_after |= names_read(ast.parse(_code_for_ast(cell.source)))
        except SyntaxError:
            pass
    out: list[nbformat.NotebookNode] = []
    solution: list[str] | None = None
    solution_label = ""
    title = next((m[1] for c in cells if c.cell_type == "markdown"
                  for m in [re.search(r"^# (.+)$", c.source, flags=re.MULTILINE)] if m), stem)
    header = header_cell(stem, convert_roles(title, book, glued), book)
    out.append(nbformat.v4.new_markdown_cell(header))
    for index, cell in enumerate(cells):
        if cell.cell_type == "markdown":
            for kind, value in _split_gated(cell.source):
                if kind == "start":
                    solution, solution_label = [], value
                elif kind == "end":
                    body = "\n\n".join(part for part in solution or [] if part.strip())
                    out.append(nbformat.v4.new_markdown_cell(details(solution_title(solution_label, book), body)))
                    solution = None
                elif solution is not None:
                    solution.append(convert_markdown(value, ctx).strip("\n"))
                else:
                    out.append(nbformat.v4.new_markdown_cell(convert_markdown(value, ctx).strip("\n")))
            continue
        if not keep[index]:
            continue
        if solution is not None:
            solution.append(_code_markdown(cell, glued))
            continue
        new = nbformat.v4.new_code_cell(cell.source, outputs=cell.get("outputs", []),
                                        execution_count=cell.get("execution_count"))
        tags = [tag for tag in cell.metadata.get("tags", []) if tag not in ("remove-cell", "remove-input")]
        if tags:
            new.metadata["tags"] = tags
        if is_install_cell(cell.source) and book.repository and PLACEHOLDER not in book.repository:
            new.source = new.source.replace(f"https://github.com/{PLACEHOLDER}", book.repository.rstrip("/"))
        out.append(new)
    learner = nbformat.v4.new_notebook(cells=out, metadata={
        "kernelspec": nb.metadata.get("kernelspec", {"name": "python3", "display_name": "Python 3",
                                                     "language": "python"}),
        "language_info": nb.metadata.get("language_info", {"name": "python"}),
    })
    for position, cell in enumerate(learner.cells):
        cell["id"] = f"{stem}-{position}"
        if cell.cell_type == "markdown" and position > 0:
            cell.source = expand_macros(cell.source, book.macros)
    return learner, ctx.problems


# --- reading the build ---------------------------------------------------------------------------

def executed_chapter(stem: str, root: Path = ROOT) -> nbformat.NotebookNode:
    """The chapter as the build executed it: its cells with the outputs in MyST-NB's execution cache."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_chapters_tool", root / "tools" / "chapters.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from jupyter_cache import get_cache

    nb = tool.book_notebook(root / "chapters" / f"{stem}.md")
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    try:
        _, merged = cache.merge_match_into_notebook(nb)
    except KeyError:
        sys.exit(f"chapters/{stem}.md has no execution in the build's cache: build the book first (make book)")
    return merged


def built_glue(stem: str, root: Path = ROOT) -> dict[str, dict]:
    """The glue data MyST-NB wrote for a chapter (``_build/jupyter_execute/chapters/<stem>.glue.json``)."""
    path = root / "_build" / "jupyter_execute" / "chapters" / f"{stem}.glue.json"
    if not path.exists():
        return {}
    return {key: value.get("data", {}) for key, value in json.loads(path.read_text()).items()}


def book_stems(root: Path = ROOT) -> list[str]:
    toc = (root / "_toc.yml").read_text()
    return re.findall(r"^\s*-?\s*file:\s*chapters/([\w-]+)\s*$", toc, flags=re.MULTILINE)


def write_all(stems: list[str] | None = None, root: Path = ROOT, output: Path = OUTPUT,
              html: Path = HTML) -> list[Path]:
    """Write the learner notebook of every chapter (default: those of the table of contents).

    Each is also copied over the page's ``.ipynb`` download (``html/_sources/chapters/<stem>.ipynb``)
    when the HTML book is there.
    """
    book = Book.from_build(root)
    output.mkdir(parents=True, exist_ok=True)
    written, failures = [], []
    for stem in stems or book_stems(root):
        try:
            learner, problems = convert(executed_chapter(stem, root), book, stem, built_glue(stem, root))
        except LearnerError as error:
            failures.append(f"chapters/{stem}.md: {error}")
            continue
        failures += [f"chapters/{stem}.md: {problem}" for problem in problems]
        path = output / f"{stem}.ipynb"
        nbformat.write(learner, path)
        written.append(path)
        download = html / "_sources" / "chapters" / f"{stem}.ipynb"
        if download.parent.exists():
            nbformat.write(learner, download)
    if failures:
        sys.exit("learner notebooks: " + "\n".join(failures))
    return written


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] in (["-h"], ["--help"], ["help"]):
        sys.exit(__doc__)
    paths = write_all(arguments or None)
    print(f"wrote {len(paths)} learner notebook(s) in {OUTPUT.relative_to(ROOT)}/ "
          "(also the pages' .ipynb downloads)")
