# Everything runs inside .venv. torch is pinned to the CPU build first so the
# project's looser requirement (torch>=2.4) does not pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install quickstart test test-portability lint format bench clean

$(BIN)/prsl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/prsl

install: $(BIN)/prsl

quickstart: install
	$(BIN)/prsl quickstart --out runs/quickstart

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest

# the float-sensitive tests again under other CPU kernels (AVX2, no SIMD) and 2 threads
test-portability: install
	$(BIN)/python tests/portability.py

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format:
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install
	$(BIN)/python benchmarks/losses.py
	$(BIN)/python benchmarks/attacks.py --threads 1
	$(BIN)/python benchmarks/train.py --threads 1

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
