# Set-up and the two commands of the README. `make run ARGS="env=CarRun"` passes Hydra overrides.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-all lint bench lock

# constraints.txt: the exact versions the tests pass with (every number depends on them). `make
# lock` re-resolves them in a scratch venv from pyproject.toml's ranges and rewrites the file;
# then `make test`, and re-record the golden fingerprints if numbers changed (docs/USAGE.md,
# Reproducibility).
LOCK := constraints.txt
# $(call install,<venv bin>,<constraint flags>): torch first, marvel with its extras, dsrl.
install = $(1)/pip install -q $(2) torch==2.13.0 && \
	$(1)/pip install -q $(2) -e ".[dev,mujoco,tune]" && \
	$(1)/pip install -q $(2) --no-deps dsrl==0.1.0

# torch==2.13.0 first: a local CPU wheel here, and it satisfies the `torch>=2.4` range so pip adds
# no CUDA build. dsrl==0.1.0 with --no-deps: its safety-gymnasium pin pulls pygame==2.1.0, which
# does not build on Python 3.11; marvel never imports dsrl's safety-gymnasium module. The mujoco
# extra adds the velocity tasks (a 4 MB wheel), the tune extra the search (+sweep=tune: Optuna);
# `pip install -e .` alone serves the Bullet tasks.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(call install,$(BIN),-c $(LOCK))
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python run.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check marvel hydra_plugins tests run.py benchmarks
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	$(call install,.lock-venv/bin,)
	.lock-venv/bin/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > $(LOCK)
	rm -rf .lock-venv
