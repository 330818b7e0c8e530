"""Where the Training page sends jobs, picked by ``RAYLANE_JOB_BACKEND``: Ray's Jobs API with the
cluster's token (``ray``, `make console`) or RayJobs through the Kubernetes API with the pod's
ServiceAccount (``kubernetes``). Both check the config and overrides before anything is sent and
raise :class:`~raylane.console.jobs.RayUnreachable` when the far side fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raylane.console import jobs, rayjobs
from raylane.console.settings import ConsoleSettings


@dataclass(frozen=True)
class RayBackend:
    address: str
    folder: Path
    tracking_uri: str

    @property
    def where(self) -> str:
        return f"the Ray cluster (`{self.address}`)"

    def submit(self, config: Path, overrides: list[str], who: str,
               limits: jobs.Limits | None = None) -> str:
        return jobs.submit(self.address, config, overrides, who, folder=self.folder,
                           tracking_uri=self.tracking_uri, limits=limits)

    def state(self, job_id: str) -> jobs.JobState:
        return jobs.job_state(self.address, job_id)

    def recent(self) -> pd.DataFrame:
        return jobs.recent_jobs(self.address)


@dataclass(frozen=True)
class KubernetesBackend:
    api: rayjobs.KubeApi
    cluster: str
    folder: Path
    tracking_uri: str

    @property
    def where(self) -> str:
        return f"RayJobs on the RayCluster `{self.cluster}` (namespace `{self.api.namespace}`)"

    def submit(self, config: Path, overrides: list[str], who: str,
               limits: jobs.Limits | None = None) -> str:
        return rayjobs.submit(self.api, config, overrides, who, folder=self.folder,
                              cluster=self.cluster, tracking_uri=self.tracking_uri,
                              limits=limits)

    def state(self, job_id: str) -> jobs.JobState:
        return rayjobs.job_state(self.api, job_id)

    def recent(self) -> pd.DataFrame:
        return rayjobs.recent_jobs(self.api)


def from_settings(settings: ConsoleSettings) -> RayBackend | KubernetesBackend:
    """The backend the settings name (KubernetesBackend raises RayUnreachable outside a pod)."""
    if settings.job_backend == "kubernetes":
        api = rayjobs.KubeApi.in_cluster(settings.job_namespace, settings.timeout_s)
        return KubernetesBackend(api, settings.job_cluster, settings.tune_configs,
                                 settings.tracking_uri)
    return RayBackend(settings.ray_address, settings.tune_configs, settings.tracking_uri)
