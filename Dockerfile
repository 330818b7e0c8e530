# One image for every Raylane pod: Ray head/worker (RayCluster, RayService, RayJob) and the
# MLflow tracking server. Build:  docker build -t raylane:dev .
#
# The base tag must name the Ray release pinned in pyproject.toml (ray[...]==2.60.0) and the
# Python the project tests on (3.11); `-cpu` is the Ubuntu-based CPU image.
# tests/integration/deploy/test_dockerfile.py and tests/test_kuberay_crosschecks.py fail if the
# tag, the pin and the manifests' rayVersion drift.
# By tag, not digest: see docs/security.md (pin `rayproject/ray:2.60.0-py311-cpu@sha256:...` once
# resolved with `docker buildx imagetools inspect`; no registry was reachable where this was written).
FROM rayproject/ray:2.60.0-py311-cpu

# The rayproject/ray images already run as the non-root user `ray` (uid 1000, gid 100 "users");
# say it explicitly so nothing below runs as root and the manifests' runAsUser: 1000 matches.
USER 1000:100
WORKDIR /home/ray/app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (its Ray pin equals the base image's Ray, so pip keeps that Ray and adds only
# the missing extras and libraries), every dependency at the version uv.lock names: the lock,
# exported as pip constraints, so a build next month installs what the suite ran against.
# psycopg2-binary and boto3 are the extras: the same image runs `mlflow server` against PostgreSQL
# with artifacts on S3 (kuberay/base/mlflow-deployment.yaml), and MLflow ships neither the driver
# nor the S3 client. Their versions are uv.lock's (the dev extra's, which the tests ran).
COPY --chown=1000:100 pyproject.toml uv.lock README.md ./
COPY --chown=1000:100 raylane ./raylane
COPY --chown=1000:100 ray_jobs ./ray_jobs
RUN pip install --no-cache-dir "uv==0.13.9" \
 && uv export --frozen --no-emit-project --no-hashes --extra console -o /tmp/locked.txt \
 && pip install --no-cache-dir -c /tmp/locked.txt ".[console]" "psycopg2-binary==2.9.13" "boto3==1.43.117" \
 && rm /tmp/locked.txt \
 && python -c "import ray, raylane, ray_jobs, psycopg2, boto3, flask_wtf, streamlit, altair; assert ray.__version__ == '2.60.0', ray.__version__"

# What the job and the service read at run time, relative to WORKDIR (the RayJob entrypoint is
# `python -m ray_jobs.train_pipeline --config tune_configs/credit_xgboost.yaml`, run from here).
COPY --chown=1000:100 tune_configs ./tune_configs
COPY --chown=1000:100 serve ./serve
COPY --chown=1000:100 console ./console
# The bundled samples only (see .dockerignore): small, and what the shipped configs train on.
COPY --chown=1000:100 data/credit_data.csv data/diamonds_sample.csv ./data/
