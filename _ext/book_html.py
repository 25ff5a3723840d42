"""Sphinx extension: the book's fixes to the HTML that the theme and docutils write.

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

_COLAB = re.compile(r"/blob/[^/]+/(?P<path>.+)\.(md|ipynb)$")
_BINDER = re.compile(r"/v2/(?P<provider>gh|gl|git)/(?P<repo>.+)/[^/?]+"
                     r"\?urlpath=(?P<ui>[\w/]*?tree)/(?P<path>.+)\.(md|ipynb)$")
_IMPORT_BASIC = re.compile(r"""@import\s+(url\()?["']?\.\./basic\.css["']?\)?\s*;""")


def _launch_and_bibliography(app: Sphinx, pagename, templatename, context, doctree) -> None:
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
    # after sphinx-book-theme's launch buttons (priority 501)
    app.connect("html-page-context", _launch_and_bibliography, priority=600)
    app.connect("build-finished", _inline_basic_css)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
