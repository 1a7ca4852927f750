"""MLflow experiment tracking and model registry for the regional ML assets.

Tracking goes through dagster-mlflow's `MlFlow` (the object its `mlflow_tracking`
resource yields): it tags each MLflow run with the Dagster run id, resumes that MLflow
run when the same Dagster run retries, and forwards every `mlflow` function. This
resource wraps it because, used as is, it does not fit partitioned assets:

- `mlflow_tracking` opens one MLflow run per Dagster run, in one experiment fixed in
  config, when the resource is initialised. Meridian needs one experiment per region
  (`fraud-<region>`) and one MLflow run per (region, stage): tuning and training of a
  region in the same Dagster run must not share a run, since MLflow parameters are
  immutable and both stages log `learning_rate`.
- Its run is ended by the `end_mlflow_on_run_finished` hook, which exists for op jobs
  only; assets materialized from the UI would leave MLflow runs open forever. Here each
  run is ended when its stage ends, FAILED if the stage raised.
- It creates experiments with MLflow's default artifact location; here each region's
  artifacts (models, curves, trial histories) live under that region's own storage root,
  so nothing a model was trained on leaves its residency zone through MLflow.
- It does not check that the tracking server is reachable; an unreachable server would
  otherwise surface as a retry storm deep inside a training run. `preflight()` fails
  fast with the URI and the cause, before any work.

The embedded default tracks to SQLite under `MERIDIAN_HOME/mlflow/`; any tracking URI
(an MLflow server in production) comes from config.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field
from sqlalchemy.engine import make_url

from meridian.locks import file_lock, pid_alive
from meridian.mlflow_store import seed_sqlite_store
from meridian.paths import meridian_home

# An unreachable server must fail in seconds, not after MLflow's default ~2 minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


# Who owns an MLflow run while it is RUNNING: a run whose process is gone was abandoned
# (the process was killed), and the next stage of the region marks it FAILED.
OWNER_HOST_TAG = "meridian.host"
OWNER_PID_TAG = "meridian.pid"
ABANDONED_TAG = "meridian.abandoned"


def owner_tags() -> dict[str, str]:
    return {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(os.getpid())}


class MlflowUnavailable(RuntimeError):
    """The tracking server or backend store cannot be reached; nothing was written."""


def default_tracking_uri(home: Path | None = None) -> str:
    # timeout: regions train in parallel processes against one SQLite file; a writer waits
    # for another's transaction instead of failing with "database is locked".
    return f"sqlite:///{(home or meridian_home()) / 'mlflow' / 'mlflow.db'}?timeout=60"


@cache
def _stage_run_class() -> type:
    import mlflow
    from dagster_mlflow.resources import MlFlow

    class StageRun(MlFlow):
        """dagster-mlflow's run, found by Dagster run id *and* stage when a run retries."""

        def _get_current_run_id(self, experiment=None, dagster_run_id=None):
            found = mlflow.search_runs(
                experiment_ids=[self.experiment.experiment_id],
                filter_string=(
                    f"tags.dagster_run_id = '{self.dagster_run_id}' "
                    f"and tags.stage = '{self.extra_tags['stage']}'"
                ),
            )
            return None if found.empty else found.run_id.values[0]

    return StageRun


def _dagster_run_ended(context, run_id: str) -> bool:
    if run_id == context.run_id:
        return False
    run = context.instance.get_run_by_id(run_id)
    return run is not None and run.is_finished


@dataclass
class _InitContextShim:
    """What dagster_mlflow.MlFlow reads from its resource-init context."""

    log: object
    run_id: str
    dagster_run: object
    resource_config: dict


class MlflowTrackingResource(dg.ConfigurableResource):
    """Per-region MLflow experiments and registered models, through dagster-mlflow."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default SQLite under MERIDIAN_HOME/mlflow/"
    )
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI, for links in asset metadata",
    )
    home: str | None = Field(default=None, description="Data root; default $MERIDIAN_HOME or .meridian/")

    def uri(self) -> str:
        home = Path(self.home).resolve() if self.home else None
        return self.tracking_uri or default_tracking_uri(home)

    def client(self):
        import mlflow

        from meridian import artifact_store

        artifact_store.install()  # s3:// artifacts through each region's own endpoint and credentials
        mlflow.set_tracking_uri(self.uri())
        mlflow.set_registry_uri(self.uri())
        return mlflow.MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def preflight(self) -> None:
        """Fail fast, with the URI and the cause, when the backend cannot be reached."""
        uri = self.uri()
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                socket.create_connection((parsed.hostname, port), timeout=5).close()
            except OSError as error:
                raise MlflowUnavailable(
                    f"MLflow tracking server {uri} is unreachable ({error}); nothing was trained or "
                    "registered. Start the server or set the tracking URI in the mlflow resource config."
                ) from error
            return
        # The store's file as MLflow (SQLAlchemy) reads the URI: sqlite:////abs/mlflow.db is
        # absolute, sqlite:///mlflow.db relative to the working directory.
        store = Path(make_url(uri).database or "") if parsed.scheme == "sqlite" else None
        if store is not None:
            try:
                store.parent.mkdir(parents=True, exist_ok=True)
                if not os.access(store.parent, os.W_OK):
                    raise PermissionError(f"{store.parent} is not writable")
            except OSError as error:
                raise MlflowUnavailable(
                    f"MLflow backend store {uri} is unusable ({error}); nothing was trained or registered"
                ) from error
        # Fail here rather than mid-run if the store answers but is broken. The first use of
        # a SQLite store creates its schema; two processes doing that at once collide
        # ("table ... already exists"), so the first touch of each store happens under a
        # lock beside the database, as the Dagster instance's own initialisation does.
        init_lock = (
            file_lock(store.parent / ".mlflow-init.lock", timeout_s=300)
            if store is not None
            else nullcontext()
        )
        try:
            with init_lock:
                if store is not None:
                    seed_sqlite_store(store)
                client = self.client()
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)
        except Exception as error:
            raise MlflowUnavailable(
                f"MLflow backend {uri} did not answer ({type(error).__name__}: {error}); nothing was "
                "trained or registered"
            ) from error

    def experiment_name(self, region: str) -> str:
        return f"fraud-{region}"

    def artifact_location(self, region: str, artifact_root: Path | None) -> str | None:
        """Where the region's experiment keeps its artifacts: its zone's artifact bucket when
        one is configured (meridian.artifact_store), else `artifact_root` for a local store
        (inside the region's root), else the tracking server's default."""
        from meridian import artifact_store
        from meridian.settings import settings
        from meridian.topology import load_topology

        zone_location = artifact_store.experiment_location(load_topology(settings().topology_path), region)
        if zone_location is not None:
            return zone_location
        local = urlparse(self.uri()).scheme in ("sqlite", "file", "")
        return artifact_root.as_uri() if artifact_root is not None and local else None

    def ensure_experiment(self, region: str, location: str | None) -> str:
        """The region's experiment id; created with its artifacts at `location` (None: MLflow's default).

        An existing experiment keeps the location it was created with (MLflow cannot move
        it): one elsewhere than `location` is refused, since the region's models would be
        written outside the place its zone's configuration names.
        """
        client = self.client()
        name = self.experiment_name(region)
        found = client.get_experiment_by_name(name)
        if found is not None:
            if location is not None and found.artifact_location.rstrip("/") != location.rstrip("/"):
                raise MlflowUnavailable(
                    f"experiment {name} keeps its artifacts at {found.artifact_location}, not at "
                    f"{location} where its zone's configuration puts them; nothing was logged. Move "
                    "its runs and rename or delete the experiment, or correct the configuration"
                )
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location, tags={"region": region})
        except Exception:
            found = client.get_experiment_by_name(name)  # created concurrently
            if found is None:
                raise
            return found.experiment_id

    def fail_abandoned_runs(self, region: str, run_ended=None) -> list[str]:
        """Mark FAILED the region's runs still RUNNING whose owner is gone; their ids.

        Abandoned: the process that opened the run (its host and pid tags) no longer exists
        on this host, or `run_ended(dagster_run_id)` says its Dagster run has finished
        (for runs owned by another host). A run of a live process is never touched.
        """
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment_name(region))
        if experiment is None:
            return []
        here = socket.gethostname()
        failed = []
        for run in client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            tags = run.data.tags
            reason = None
            pid = tags.get(OWNER_PID_TAG, "")
            if tags.get(OWNER_HOST_TAG) == here and pid.isdigit() and not pid_alive(int(pid)):
                reason = f"its process {pid} on {here} is gone (killed before the run ended)"
            elif run_ended is not None and tags.get("dagster_run_id") and run_ended(tags["dagster_run_id"]):
                reason = f"its Dagster run {tags['dagster_run_id']} has ended"
            if reason:
                client.set_tag(run.info.run_id, ABANDONED_TAG, reason)
                client.set_terminated(run.info.run_id, status="FAILED")
                failed.append(run.info.run_id)
        return failed

    @contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        region: str,
        stage: str,
        artifact_root: Path | None = None,
        tags: dict[str, str] | None = None,
    ) -> Iterator[object]:
        """An active MLflow run for (Dagster run, region, stage), ended when the block ends.

        Callers run `preflight()` first, before the work whose results they will log.
        """
        import mlflow
        from mlflow.entities import RunStatus

        self.ensure_experiment(region, self.artifact_location(region, artifact_root))
        abandoned = self.fail_abandoned_runs(region, lambda run_id: _dagster_run_ended(context, run_id))
        if abandoned:
            context.log.warning(
                f"{region}: marked {len(abandoned)} abandoned MLflow run(s) FAILED: {abandoned}"
            )
        if mlflow.active_run() is not None:
            mlflow.end_run()
        shim = _InitContextShim(
            log=context.log,
            run_id=context.run_id,
            dagster_run=context.run,
            resource_config={
                "experiment_name": self.experiment_name(region),
                "mlflow_tracking_uri": self.uri(),
                "extra_tags": {"region": region, "stage": stage, **owner_tags(), **(tags or {})},
            },
        )
        run = _stage_run_class()(shim)
        mlflow.set_tags(owner_tags())  # a resumed run (a retry) is owned by this process now
        try:
            yield run
        except BaseException:
            mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
            raise
        mlflow.end_run()

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"
