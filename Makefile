# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build; see docs/howto/gpu.md for a CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test bench clean docs-figures

# What the demo needs (goalscope and its dependencies); the test extras (Ray, SB3, MiniGrid, Jupyter) come with
# `make test`, so a fresh `make demo` installs only what it runs.
$(BIN)/goalscope: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-extras: $(BIN)/goalscope pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/goalscope

demo: install
	$(BIN)/goalscope run experiments/default.toml --out runs/demo
	$(BIN)/goalscope validate runs/demo --episodes 64
	$(BIN)/goalscope report runs/demo

# Every image under docs/images/, redrawn by the report's figure functions from the runs docs/figures.toml names
# (their directories must be there: `make demo` for runs/demo; the manifest says how each other run was made).
docs-figures: install
	$(BIN)/goalscope report --docs docs/figures.toml

test: $(VENV)/.test-extras
	$(BIN)/python -m pytest -q

bench: $(VENV)/.test-extras
	$(BIN)/python benchmarks/env_throughput.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/experiment_walltime.py
	$(BIN)/python benchmarks/sweep_scaling.py
	$(BIN)/python benchmarks/precision.py --skip-curves

clean:
	rm -rf $(VENV) runs
