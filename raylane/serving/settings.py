"""The deployment's ``user_config``: which model, where the registry is, batching, limits, logging.

Validated with pydantic when Serve hands it to ``reconfigure`` (not per request).
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BatchingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.0, ge=0)
    # Requests with more rows than this skip the batch queue (they are a batch already).
    max_rows_per_item: int = Field(16, ge=1)


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(16 * 2**20, ge=1024)


PREDICTION_LOG_ENV = "RAYLANE_PREDICTION_LOG"
DEFAULT_PREDICTION_LOG = "/tmp/raylane/prediction_log"


class PredictionLogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # A local directory or a URI pyarrow or fsspec knows (s3://bucket/prefix, gs://...). None:
    # the replica's $RAYLANE_PREDICTION_LOG, else /tmp/raylane/prediction_log.
    directory: str | None = Field(None, validate_default=True)
    sample_rate: float = Field(0.01, ge=0, le=1)
    flush_rows: int = Field(10_000, ge=1)
    flush_interval_s: float = Field(30.0, gt=0)
    # The whole location (every replica's files): the oldest files go beyond this.
    max_total_bytes: int = Field(256 * 2**20, ge=1024)
    # Rows held while a write is under way; more are dropped and counted. None: 2 x flush_rows.
    max_buffered_rows: int | None = Field(None, ge=1)
    # Names this deployment's files (predictions-<prefix>-...); the cap trims only those, so
    # deployments sharing a location keep each other's history. None: the model's name.
    prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # The input columns recorded (an allowlist; the monitor reads only these); None: every column.
    columns: list[str] | None = None
    # A row's string inputs are cut to fit this many UTF-8 bytes.
    max_row_bytes: int = Field(4096, ge=64)
    # Retention by age: this deployment's files last written longer ago than this are deleted by
    # the pass that applies max_total_bytes. None: kept until the size cap needs the room.
    max_age_days: float | None = Field(None, gt=0, le=3650)

    @field_validator("directory")
    @classmethod
    def _from_environment(cls, value: str | None) -> str:
        return value or os.environ.get(PREDICTION_LOG_ENV) or DEFAULT_PREDICTION_LOG


class ServingSettings(BaseModel):
    """The ``user_config`` of the deployment (see ``serve/config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str = "models:/credit@champion"
    # None: read MLFLOW_TRACKING_URI from the replica's environment.
    tracking_uri: str | None = None
    # Re-resolve an alias this often and swap when it moved; 0 disables polling.
    poll_interval_s: float = Field(30.0, ge=0)
    intra_op_threads: int = Field(1, ge=1)
    # /metadata lists at most this many training categories per column (0: only their number).
    metadata_categories: int = Field(0, ge=0, le=200)
    batching: BatchingSettings = BatchingSettings()
    limits: LimitSettings = LimitSettings()
    prediction_log: PredictionLogSettings = PredictionLogSettings()

    def resolved_tracking_uri(self) -> str | None:
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
