# The book's two commands (see README):  make book  |  make test
# Both create .venv on first use and install requirements.txt and deepgrad (editable).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# DEEPGRAD_BOOK=1: executions for the book, where dg.glue hands values to MyST-NB (elsewhere it shows them)
JB     := DEEPGRAD_BOOK=1 $(BIN)/jupyter-book build . --warningiserror --keep-going
# chapters executed at a time: by nbval, and by `make book` for what the execution cache lacks
JOBS   ?= 2
# PyTorch from another index, on a fresh .venv: `make book TORCH_INDEX=cpu` installs PyTorch's CPU build
# from PyTorch's own index (on Linux the default index serves the CUDA build: several GB more); a URL
# names any index. Only torch is asked there, once, bounded (--retries 1 --timeout 15: an unreachable
# index fails the install within about 40 s); the rest comes from the default index. Empty: nothing added.
TORCH_INDEX ?=
TORCH_INDEX_URL = $(if $(filter cpu,$(TORCH_INDEX)),https://download.pytorch.org/whl/cpu,$(TORCH_INDEX))
TORCH_PIN = $(shell sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.txt)
# nbval compares text outputs recorded on a CPU: run the chapters there for the comparison
TEST_ENV := DEEPGRAD_DEVICE=cpu

.PHONY: book learner pdf test unit nbval browser linkcheck reference bench clean distclean help

help:
	@echo "make book       build the HTML book into _build/html (executes changed chapters)"
	@echo "make learner    the chapters as plain notebooks that read like the book (_build/learner/), from the build"
	@echo "make pdf        the whole book as one PDF, _build/pdf/book.pdf (Chromium prints the single-page"
	@echo "                build; executes only what the cache lacks); a later make book links it"
	@echo "make test       lint and unit tests, nbval on every chapter, the book build (warnings are errors;"
	@echo "                it reuses nbval's executions), then every page checked in headless Chromium"
	@echo "make linkcheck  check every external link of the book (needs the internet; weekly on GitHub)"
	@echo "make reference  re-record chapter outputs in tests/reference/ after an intended change"
	@echo "make bench      time and memory of every chapter, cold and warm builds, the tests, the report's"
	@echo "                overhead, each against its budget (empties _build/)"
	@echo "make clean      remove _build/ (the next build re-executes every chapter)"
	@echo "make distclean  also remove the virtual environment"
	@echo "TORCH_INDEX=cpu on the first install (e.g. make book TORCH_INDEX=cpu): PyTorch's CPU build"

$(STAMP): requirements.txt constraints.txt pyproject.toml tools/ipython_kernel_config.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	mkdir -p $(VENV)/etc/ipython && cp tools/ipython_kernel_config.py $(VENV)/etc/ipython/
	$(if $(TORCH_INDEX_URL),$(BIN)/python -m pip install --disable-pip-version-check -q --retries 1 --timeout 15 \
	    --no-deps --index-url $(TORCH_INDEX_URL) torch==$(TORCH_PIN))
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/python tools/chapters.py cache-guard
	$(BIN)/python tools/chapters.py execute --jobs $(JOBS)
	$(JB)
	$(BIN)/python tools/learner.py
	@echo "The book is in _build/html/index.html; its chapters as notebooks for learners in _build/learner/"

# The learner notebooks again from the last build (tools/learner.py); `book` writes them too
learner:
	$(BIN)/python tools/learner.py

# The PDF edition: the single-page HTML build (the same execution cache as `book`), printed by
# headless Chromium (tools/pdf.py); then its checks (tests/test_pdf.py). Run before `book`, which
# copies the PDF into the site and links it from every page.
pdf: $(STAMP)
	$(BIN)/python tools/chapters.py cache-guard
	$(BIN)/python tools/chapters.py execute --jobs $(JOBS)
	$(BIN)/jupyter-book build . --builder singlehtml --warningiserror --keep-going
	$(BIN)/python tools/pdf.py _build/singlehtml _build/pdf/book.pdf
	BOOK_PDF_REQUIRED=1 $(BIN)/python -m pytest tests/test_pdf.py -q

unit: $(STAMP)
	$(BIN)/ruff check lib tests tools _ext conftest.py
	$(TEST_ENV) $(BIN)/python -m pytest tests --ignore=tests/test_browser.py -m "not built_book and not built_pdf"

# nbval executes every chapter, $(JOBS) chapters at a time, and stores each execution in MyST-NB's
# cache (--stage-executions, conftest.py), so the `book` step of `make test` executes nothing: each
# chapter runs once per test. cache-guard first: it must not empty the cache after the staging.
nbval: $(STAMP)
	$(BIN)/python tools/chapters.py cache-guard
	$(BIN)/python tools/chapters.py prepare
	$(TEST_ENV) $(BIN)/python tools/chapters.py nbval --jobs $(JOBS) --nbval-current-env \
	    --nbval-sanitize-with tests/sanitize.cfg --nbval-cell-timeout=120 --stage-executions

# The built book in a real browser (tests/test_browser.py): run after `book`; screenshots in _build/screenshots/.
# Then every built chapter as a learner notebook (tests/test_learner.py; `unit` ran it without a build).
browser: book
	$(BIN)/python -m pytest tests/test_browser.py
	$(BIN)/python -m pytest tests -m built_book

test: unit nbval book browser

# Sphinx's linkcheck builder on the book's external links (online; .github/workflows/weekly.yml)
linkcheck: $(STAMP)
	$(BIN)/python tools/chapters.py cache-guard
	$(BIN)/jupyter-book build . --builder linkcheck

reference: $(STAMP)
	$(TEST_ENV) $(BIN)/python tools/chapters.py reference $(CHAPTERS)

bench: $(STAMP)
	$(BIN)/python tools/bench.py

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
