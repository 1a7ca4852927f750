"""A run launcher whose run workers the daemon's run monitoring can check.

Dagster's DefaultRunLauncher starts each run worker as a local process but cannot tell
the run monitor whether it is still alive: a worker killed mid-run (OOM killer, a node
lost) leaves its run STARTED forever. This launcher answers the health check from the
worker's pid, which the worker records on its RUN_START event: gone → FAILED, so run
monitoring marks the run failed and run retries re-execute it from the failed step.
(On Kubernetes the K8sRunLauncher checks the Job's pod instead; platform/deploy.)
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData


class MonitoredRunLauncher(DefaultRunLauncher):
    def __init__(self, inst_data: ConfigurableClassData | None = None):
        super().__init__(inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def _worker_pid(self, run_id: str) -> int | None:
        starts = self._instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
        return starts[-1].dagster_event.pid if starts and starts[-1].dagster_event else None

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the worker has not recorded its pid yet")
        try:
            process = psutil.Process(pid)
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {pid} is gone (killed or crashed)"
        )
