"""Sphinx extension: the PDF edition on the web site.

``make pdf`` prints the book to ``book_pdf_source`` (tools/pdf.py). When that file exists, the HTML
build copies it into the site as ``book_pdf_name`` and every page's download menu offers it in place
of the theme's ".pdf" entry, which only printed the current page (``window.print()``). Without the
file the menu keeps the theme's entry, so the site never links to a file it does not have.

The single-page build that the PDF is printed from needs one fix. Sphinx looks up how to write a
node under the builder's name (``singlehtml``) and falls back to its format (``html``) only when
no extension registered anything under that name. Some extensions register ``singlehtml``
handlers, so the nodes that others register for ``html`` only (sphinx-proof's, and the
``HiddenCellNode`` that sphinx-jupyterbook-latex puts beside every table of contents) had no
handler there and the build failed. The single-page builder gets every ``html`` handler it lacks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx


def _source(app: Sphinx) -> Path:
    return Path(app.confdir) / app.config.book_pdf_source


def _available(app: Sphinx) -> bool:
    return app.builder.name == "html" and _source(app).is_file()


def _link_pdf(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if not _available(app):
        return
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []):
            if button.get("label") == "download-pdf-button":
                button.pop("javascript", None)
                button.update(type="link", url=context["pathto"](app.config.book_pdf_name, 1),
                              text=".pdf", tooltip="Download the whole book as a PDF",
                              label="download-book-pdf-button")


def _copy_pdf(app: Sphinx, exception) -> None:
    if exception is None and _available(app):
        shutil.copyfile(_source(app), Path(app.outdir) / app.config.book_pdf_name)


def _html_handlers_for_singlehtml(app: Sphinx) -> None:
    if app.builder.name != "singlehtml":
        return
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visitors in handlers.get("html", {}).items():
        single.setdefault(node, visitors)


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", _html_handlers_for_singlehtml)
    app.add_config_value("book_pdf_source", "_build/pdf/book.pdf", "html")
    app.add_config_value("book_pdf_name", "vanishing-exploding-gradients.pdf", "html")
    # after sphinx-book-theme has made the header buttons (priority 501)
    app.connect("html-page-context", _link_pdf, priority=600)
    app.connect("build-finished", _copy_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
