# Every target installs what it needs into .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CONFIG ?= tune_configs/credit_xgboost.yaml
# As in an activated virtualenv: `ray`, `mlflow`, `serve` and the `python` that Ray job
# entrypoints run are the environment's own.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(UV) pip install -p $(PY) -q --compile-bytecode -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install  ## tune, track, export and register on the bundled credit dataset (local Ray, local MLflow)
	$(PY) -m ray_jobs.train_pipeline --config $(CONFIG)

test: install  ## the whole suite: real Ray, real Serve, real MLflow
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: install
	$(PY) -m benchmarks.bench_tuning

clean:
	rm -rf mlruns mlartifacts ray_results raylane_runs mlflow.db
