"""Sphinx extension: the book's fixes to the HTML that the theme and docutils write.

- **No buttons that point nowhere.** The repository's address has one place, ``repository.url`` in
  ``_config.yml``; the repository keeps the placeholder ``OWNER/REPO`` there and the publishing
  workflow replaces it by the repository it runs in (``tools/publish.py set-repository``). A build
  whose address is still the placeholder (or empty) leaves out every button that would lead to it:
  repository, edit, issues, and the Binder and Colab launch buttons.
- **One header, working sidebar buttons.** pydata-sphinx-theme 0.17 adds a header bar of its own
  above sphinx-book-theme's, holding a second search field and a second pair of ``.primary-toggle``
  / ``.secondary-toggle`` buttons. The themes' scripts bind the first button of each class, the
  hidden one in that bar, so the visible chapter-menu and page-contents buttons did nothing. With
  ``navbar_persistent`` empty (the other ``navbar_*`` options already are, in sphinx-book-theme) the
  theme writes no header bar at all: one button of each class remains, the visible one, and the
  scripts bind it.
- **Executions for the book.** ``DEEPGRAD_BOOK=1`` is set in the build's environment, which the
  kernels MyST-NB starts inherit, so that ``dg.glue`` and ``dg.plotting.glue_figure`` hand their
  values to MyST-NB (outside the book they show them instead: ``deepgrad.book.in_book``). The
  Makefile sets it too; this covers a ``jupyter-book build`` started by hand.
- **Colab and Binder open the learner notebook.** sphinx-book-theme points Colab and Binder at the
  chapter's source, ``chapters/<stem>.md``: Colab cannot open it, and JupyterLab shows its MyST
  markup raw. The publishing workflow pushes every chapter's learner notebook (``tools/learner.py``:
  numbers and figures in the text, no MyST) to the branch ``colab_notebooks_branch``, with what
  ``binder/`` installs (``tools/publish.py notebooks``); both buttons open ``chapters/<stem>.ipynb``
  there. (The page's ``.ipynb`` download is the same notebook: ``tools/learner.py`` writes it.)
- **The bibliography is a valid list.** docutils marks each entry ``role="doc-biblioentry"`` inside
  a ``role="list"``: that role is deprecated (DPUB-ARIA 1.1) and not a list item, so assistive
  technologies (and axe-core's ``aria-required-children``) see a list without items. Each entry
  becomes ``role="listitem"``.
- **Each script once.** sphinx-thebe and sphinx-togglebutton add inline scripts
  (``const THEBE_JS_URL = ...``) after the HTML builder has started; Sphinx then keeps the script
  twice, once as registered (file name ``None``) and once as the builder's (file name ``""``), and
  does not see that they are the same. Every page declared the same ``const`` twice and the browser
  threw "Identifier 'THEBE_JS_URL' has already been declared". Repeated scripts are dropped.
- **Search ranks a chapter first for its own subject, and quotes prose.** ``static/book-search.js``,
  on the search page only: Sphinx's scorer with a boost for the chapter whose title holds the query,
  result snippets without code, outputs or page chrome, and a chapter found by its own title listed
  once, as "N. Title" (Sphinx compares the numbered page title with the plain heading and showed
  "N. Title > Title" beside the chapter's other result; see the script).
- **Hover previews.** ``static/book-previews.js``, on every page: a link to a glossary term, an
  equation or a figure shows its target in a small panel on hover or keyboard focus (read from the
  book's own pages; nothing is fetched from outside the site).
- **No relative ``@import``.** pydata-sphinx-theme's ``_static/styles/theme.css`` is only
  ``@import "../basic.css"``. Browsers resolve that against the stylesheet, but tools that re-fetch
  stylesheets (axe-core's CSSOM preload among them) resolve it against the page and request a
  ``basic.css`` that does not exist. ``theme.css`` gets ``basic.css``'s rules inlined instead: the
  same rules in the same place of the cascade, one request fewer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sphinx.application import Sphinx

STATIC = Path(__file__).resolve().parent / "static"
#: The repository address of a build that has none (``_config.yml`` before publishing).
PLACEHOLDER = "OWNER/REPO"
_REPOSITORY_BUTTONS = ("use_repository_button", "use_edit_page_button", "use_issues_button",
                       "use_source_button")
_COLAB = re.compile(r"/blob/[^/]+/(?P<path>.+)\.(md|ipynb)$")
_BINDER = re.compile(r"/v2/(?P<provider>gh|gl|git)/(?P<repo>.+)/[^/?]+"
                     r"\?urlpath=(?P<ui>[\w/]*?tree)/(?P<path>.+)\.(md|ipynb)$")
_IMPORT_BASIC = re.compile(r"""@import\s+(url\()?["']?\.\./basic\.css["']?\)?\s*;""")


def has_repository(url: str | None) -> bool:
    """Whether ``url`` is a real repository address (not empty, not the placeholder)."""
    return bool(url and url.strip()) and PLACEHOLDER not in url


def _theme_options(app: Sphinx, config) -> None:
    config.html_static_path.append(str(STATIC))
    options = config.html_theme_options
    # no header bar of pydata-sphinx-theme's own (see the module's docstring)
    options.setdefault("navbar_persistent", [])
    if not has_repository(options.get("repository_url")):
        for button in _REPOSITORY_BUTTONS:
            options[button] = False
        options["repository_url"] = ""
        options["launch_buttons"] = {}


def _launch_and_bibliography(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if pagename == "search":
        # before searchtools.js, which keeps a Scorer that is already defined
        app.add_js_file("book-search.js")
    branch = app.config.colab_notebooks_branch
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab" and branch:
                button["url"] = _COLAB.sub(rf"/blob/{branch}/\g<path>.ipynb", button["url"])
            if button.get("text") == "Binder" and branch:
                button["url"] = _BINDER.sub(rf"/v2/\g<provider>/\g<repo>/{branch}?urlpath=\g<ui>/\g<path>.ipynb",
                                            button["url"])
    scripts = context.get("script_files")
    if scripts:
        unique, seen = [], set()
        for script in scripts:
            key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
            if key not in seen:
                seen.add(key)
                unique.append(script)
        context["script_files"] = unique
    body = context.get("body")
    if body and 'role="doc-biblioentry"' in body:
        context["body"] = body.replace('role="doc-biblioentry"', 'role="listitem"')


def _inline_basic_css(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    theme_css, basic_css = static / "styles" / "theme.css", static / "basic.css"
    if theme_css.exists() and basic_css.exists():
        text = theme_css.read_text(encoding="utf-8")
        if _IMPORT_BASIC.search(text):
            inlined = basic_css.read_text(encoding="utf-8")
            theme_css.write_text(_IMPORT_BASIC.sub(lambda _: inlined, text), encoding="utf-8")


def setup(app: Sphinx):
    os.environ["DEEPGRAD_BOOK"] = "1"  # before MyST-NB executes anything (see the module docstring)
    app.add_config_value("colab_notebooks_branch", "notebooks", "html")
    # before the themes read their options (builder-inited)
    app.connect("config-inited", _theme_options)
    app.add_js_file("book-previews.js", loading_method="defer")
    # after sphinx-book-theme's launch buttons (priority 501)
    app.connect("html-page-context", _launch_and_bibliography, priority=600)
    app.connect("build-finished", _inline_basic_css)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
