# TiefVision — two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= tiefvision-demo

.PHONY: install demo test lint typecheck format bench constraints clean postgres chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

## demo: synthetic catalog -> ingest into a local store -> encode -> summaries
demo: $(STAMP)
	$(BIN)/tiefvision demo --workdir $(DEMO_DIR)

## test: lint + typecheck + the whole pytest suite (slow end-to-end tests included); the annotation
## tests need PostgreSQL binaries (installed by `postgres`), so a missing server fails the run;
## the web pages' browser tests need Debian's Chromium (installed by `chromium`)
test: $(STAMP) lint typecheck postgres chromium
	TIEFVISION_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest

## postgres: install PostgreSQL from Debian packages when missing (the tests start their own
## throwaway server on loopback; nothing is configured system-wide)
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	echo "Installing PostgreSQL (Debian package) for the tests ..."; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql

## chromium: install Debian's Chromium when missing, for the browser tests (Playwright drives
## /usr/bin/chromium; `playwright install` and its browser downloads are never used)
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	echo "Installing Chromium (Debian package) for the browser tests ..."; \
	$$SUDO apt-get update && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: mypy over the packages named in pyproject.toml's [tool.mypy] files
typecheck: $(STAMP)
	$(BIN)/python -m mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/encode.py
	$(BIN)/python bench/locator.py

constraints: $(STAMP)
	head -2 constraints.txt > constraints.txt.new
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^tiefvision' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
