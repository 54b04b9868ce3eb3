# Two commands on a fresh machine: `make run` and `make test`.
# Each creates the virtual environment and installs memoryd on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build (see pyproject.toml).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# First run: seed the watched folders with the examples. Then store and embed
# what is there, show a search (`make demo` stops there), and run the daemon
# (Ctrl-C stops it).
run: demo
	exec $(BIN)/memoryd watch

demo: $(STAMP)
	@test -e conversations || cp -r examples/conversations conversations
	@test -e summaries || cp -r examples/summaries summaries
	$(BIN)/memoryd ingest
	$(BIN)/memoryd embed
	$(BIN)/memoryd search "a poem about a thunderstorm written in code" --k 3

bench: $(STAMP)
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.daemon

lint: $(STAMP)
	$(BIN)/ruff check memoryd tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
