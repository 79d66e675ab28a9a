# Set-up and the two commands of the README. `make run ARGS="env=CarRun"` passes Hydra overrides.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all lint bench

# torch==2.13.0 first: a local CPU wheel here, and it satisfies the `torch>=2.4` range so pip adds
# no CUDA build. dsrl==0.1.0 with --no-deps: its safety-gymnasium pin pulls pygame==2.1.0, which
# does not build on Python 3.11; marvel never imports dsrl's safety-gymnasium module. The mujoco
# extra adds the velocity tasks (a 4 MB wheel); `pip install -e .` alone serves the Bullet tasks.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,mujoco]"
	$(BIN)/pip install -q --no-deps dsrl==0.1.0
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python run.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check marvel tests run.py benchmarks
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)
