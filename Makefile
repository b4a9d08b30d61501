# TiefVision — two commands: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= tiefvision-demo

.PHONY: install demo test lint format bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

## demo: synthetic catalog -> ingest into a local store -> encode -> summaries
demo: $(STAMP)
	$(BIN)/tiefvision demo --workdir $(DEMO_DIR)

## test: lint + the whole pytest suite (slow end-to-end tests included)
test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/encode.py

constraints: $(STAMP)
	head -2 constraints.txt > constraints.txt.new
	$(BIN)/python -m pip freeze --exclude-editable | grep -vi '^tiefvision' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
