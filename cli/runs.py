"""The runs behind `meridian run`: each region's stages as Dagster runs on the persistent instance.

For each active region: the pipeline over the whole window (one single-run backfill),
`ml_training` for the region (training set, tuning, model, promotion), `batch_inference`
and monitoring over the last days, then replication to its DR region; then the global
services once. A region's failure is recorded in its outcome and does not stop the others.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TextIO

from assets.definitions_file import load_definitions_module
from meridian.paths import meridian_home
from meridian.run_tags import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, REGION_TAG
from meridian.settings import settings

LAUNCHED_BY = {"meridian/launched_by": "meridian-cli"}
STAGES = {
    "transactions_ingestion": "ingest transactions",
    "labels_ingestion": "ingest chargebacks",
    "regional_dbt_models": "dbt build",
    "feature_views": "feature views",
    "online_features": "online store",
    "training_set": "training set",
    "fraud_model_hyperparameters": "tuning",
    "fraud_model": "training",
    "fraud_model_promotion": "promotion",
    "fraud_predictions": "batch scoring",
    "feature_drift": "drift",
    "model_performance": "performance",
    "platform_health": "platform health",
    "raw_lake_replica": "replicate raw lake",
    "features_replica": "replicate features",
    "predictions_replica": "replicate predictions",
    "online_store_replica": "replicate online",
    "model_registry_replica": "replicate registry",
    "deployment_config_replica": "replicate deploy cfg",
    "global_merchant_risk": "shared aggregates",
    "replication_status": "replication status",
    "residency_audit": "residency audit",
    "governance_catalog": "governance catalog",
    "cost_report": "cost report",
}
# Materialization metadata the summary shows, by asset.
CAPTURED = {
    "fraud_model": ("model_version", "test_pr_auc", "test_roc_auc"),
    "fraud_model_promotion": ("decision", "champion_version"),
    "fraud_predictions": ("run_total_rows",),
    "feature_drift": ("region_days_by_worst_status",),
    "raw_lake_replica": ("replica_version", "target_region"),
    "residency_audit": ("passed", "files_scanned"),
    "cost_report": ("total_usd",),
    "replication_status": ("breaches",),
}


def prepare_environment(home: Path | None = None) -> Path:
    """Point MERIDIAN_HOME and DAGSTER_HOME at the data root and install the instance config."""
    home = (home or meridian_home()).resolve()
    os.environ["MERIDIAN_HOME"] = str(home)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from meridian.profiles import install_instance_config

    install_instance_config(dagster_home)  # the profile's: SQLite (local) or PostgreSQL (production)
    return home


@dataclass
class RegionOutcome:
    region: str
    success: bool = False
    seconds: float = 0.0
    steps: dict[str, str] = field(default_factory=dict)
    checks_passed: int = 0
    checks_failed: int = 0
    checks_warned: int = 0  # warn-severity checks that did not pass: alerts, not failures
    error: str | None = None
    started: float = 0.0
    captured: dict[str, object] = field(default_factory=dict)
    counts: dict[str, int | str] = field(default_factory=dict)  # cli.summary.landed_counts


@dataclass
class RunPlan:
    """What `meridian run` does for every region, and with which run config."""

    pipeline_config: dict
    training_config: dict
    quiet_config: dict
    train: bool = True
    score_days: int = 7

    @classmethod
    def pipeline_only(cls, rows_per_day: int, log_level: str = "WARNING") -> RunPlan:
        """Ingest and transform only (the benchmarks)."""
        quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
        return cls(
            pipeline_config={"resources": {"source": {"config": {"rows_per_day": rows_per_day}}}, **quiet},
            training_config=quiet,
            quiet_config=quiet,
            train=False,
            score_days=0,
        )


def _progress_listener(outcome: RegionOutcome, started: float, out: TextIO):
    def on_event(entry) -> None:  # EventLogEntry
        event = entry.dagster_event
        if event is None:
            return
        kind = event.event_type_value
        stage = STAGES.get((event.step_key or "").split(".")[0], event.step_key)
        if kind == "STEP_START":
            print(f"  [{outcome.region:<13}] {stage:<20} started", file=out, flush=True)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            status = "ok" if kind == "STEP_SUCCESS" else "FAILED"
            outcome.steps[stage] = status
            print(
                f"  [{outcome.region:<13}] {stage:<20} {status:<6} at {time.monotonic() - started:6.1f}s",
                file=out,
                flush=True,
            )
        elif kind == "ASSET_MATERIALIZATION":
            wanted = CAPTURED.get(event.asset_key.to_user_string(), ())
            metadata = event.event_specific_data.materialization.metadata
            for key in wanted:
                if key in metadata:
                    outcome.captured[key] = metadata[key].value
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if evaluation.passed:
                outcome.checks_passed += 1
            elif evaluation.severity.value == "WARN":
                outcome.checks_warned += 1
            else:
                outcome.checks_failed += 1

    return on_event


def _execute(job, instance, outcome: RegionOutcome, log_path: Path, **kwargs) -> bool:
    """One in-process run of `job`; dbt's and LightGBM's chatter goes to the region's log file."""
    run_id = str(uuid.uuid4())
    instance.add_event_listener(run_id, _progress_listener(outcome, outcome.started, sys.stdout))
    try:
        with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            result = job.execute_in_process(instance=instance, run_id=run_id, raise_on_error=False, **kwargs)
    except Exception as exc:  # one region's crash must not stop the others
        outcome.error = f"{job.name}: {type(exc).__name__}: {exc}"
        return False
    if not result.success:
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        outcome.error = (
            f"{job.name}: " + (failures[0].message if failures else "run failed") + f" (log: {log_path})"
        )
    return result.success


def run_region(defs, instance, region: str, days: list[str], plan: RunPlan, log_dir: Path) -> RegionOutcome:
    """The region's window through the pipeline, then (unless skipped) training and batch scoring.

    Each stage is its own Dagster run: the pipeline and scoring as one ranged run over the
    region's days, training as the region's partition of `ml_training`.
    """
    from dagster import MultiPartitionKey

    outcome = RegionOutcome(region, started=time.monotonic())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{region}-{uuid.uuid4().hex[:8]}.log"
    base_tags = {REGION_TAG: region, **LAUNCHED_BY}

    def ranged(first: str, last: str) -> dict[str, str]:
        return {
            PARTITION_RANGE_START_TAG: str(MultiPartitionKey({"region": region, "day": first})),
            PARTITION_RANGE_END_TAG: str(MultiPartitionKey({"region": region, "day": last})),
            **base_tags,
        }

    steps: list[tuple[str, dict]] = [
        ("regional_pipeline", {"tags": ranged(days[0], days[-1]), "run_config": plan.pipeline_config})
    ]
    if plan.train:
        steps.append(
            ("ml_training", {"partition_key": region, "tags": base_tags, "run_config": plan.training_config})
        )
    if plan.score_days:
        scored = ranged(days[-plan.score_days], days[-1])
        steps += [
            ("batch_inference", {"tags": scored, "run_config": plan.quiet_config}),
            # Monitoring of what was just scored, so the first look at the UI shows drift and
            # performance and the sensors find nothing to catch up on.
            ("drift_monitoring", {"tags": scored, "run_config": plan.quiet_config}),
            (
                "performance_monitoring",
                {"partition_key": region, "tags": base_tags, "run_config": plan.quiet_config},
            ),
        ]
    if plan.train:
        # Every class of the region to its DR region (same zone), as the sensor would.
        steps.append(
            (
                "regional_replication",
                {"partition_key": region, "tags": base_tags, "run_config": plan.quiet_config},
            )
        )
    # One run after the other; the first failure stops the region (all() stops there).
    ok = all(
        _execute(defs.resolve_job_def(job), instance, outcome, log_path, **kwargs) for job, kwargs in steps
    )
    outcome.success = ok
    outcome.seconds = time.monotonic() - outcome.started
    from cli.summary import landed_counts
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    with contextlib.suppress(Exception):  # the summary counts again in the main process
        outcome.counts = landed_counts(
            region_paths(load_topology(settings().topology_path).region(region)), days
        )
    return outcome


def run_global(plan: RunPlan, log_dir: Path, module: ModuleType | None = None) -> RegionOutcome:
    """The global services once every region is done: shared aggregates, audit, catalog, cost."""
    from dagster import DagsterInstance

    outcome = RegionOutcome("global", started=time.monotonic())
    log_dir.mkdir(parents=True, exist_ok=True)
    defs = (module or load_definitions_module()).defs
    with DagsterInstance.get() as instance:
        log_path = log_dir / f"global-{uuid.uuid4().hex[:8]}.log"
        tags = dict(LAUNCHED_BY)
        outcome.success = _execute(
            defs.resolve_job_def("global_governance"),
            instance,
            outcome,
            log_path,
            tags=tags,
            run_config=plan.quiet_config,
        )
    outcome.seconds = time.monotonic() - outcome.started
    return outcome


def initialize_instance() -> None:
    """Create (or migrate) the instance's SQLite storages once, before any worker starts.

    Workers that open a brand-new instance at the same moment both create its schedule
    database and stamp its schema version twice; the instance then refuses to open
    ("alembic_version has more than one head").
    """
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)


def initialize_mlflow() -> None:
    """Create the embedded MLflow store's schema once, before regions train in parallel."""
    from resources.mlflow import MlflowTrackingResource

    MlflowTrackingResource(tracking_uri=settings().mlflow_tracking_uri).preflight()


def _run_regions_in_process(
    regions: list[str], days: list[str], plan: RunPlan, log_dir: Path
) -> list[RegionOutcome]:
    """Regions one after another, sharing one load of the definitions and one instance."""
    from dagster import DagsterInstance

    defs = load_definitions_module().defs
    with DagsterInstance.get() as instance:
        return [run_region(defs, instance, region, days, plan, log_dir) for region in regions]


def _run_region_in_child(region: str, days: list[str], plan: RunPlan, log_dir: Path) -> RegionOutcome:
    """Entry point of a worker process: its own definitions, instance connection and dbt."""
    quiet_libraries()
    try:
        return _run_regions_in_process([region], days, plan, log_dir)[0]
    finally:
        exit_quickly()


def _run_global_in_child(plan: RunPlan, log_dir: Path) -> RegionOutcome:
    """The global services in a worker that ran a region: its definitions are loaded already."""
    try:
        return run_global(plan, log_dir)
    finally:
        exit_quickly()


def exit_quickly() -> None:
    """Spare the process's exit a garbage collection of everything it holds.

    A worker that loaded Dagster, dbt's, MLflow's and LightGBM's modules took 1.4 s to exit,
    spent in the interpreter's last collection of its heap; after `gc.freeze()` (everything
    alive now moves to a generation no collection visits) it exits in 0.07 s. Nothing is
    lost: files are closed by their `with` blocks, and atexit handlers (logging's flush)
    still run. Objects made afterwards (the next run in the same worker) are collected as usual.
    """
    import gc

    gc.freeze()


def run_all(
    regions: list[str], days: list[str], plan: RunPlan, log_dir: Path, parallel: int, with_global: bool
) -> tuple[list[RegionOutcome], RegionOutcome | None]:
    """Each region as its own runs (with parallel > 1, that many regions at once in worker
    processes), then, when every region succeeded and `with_global`, the global services."""
    if parallel <= 1 or len(regions) == 1:
        if plan.train:
            initialize_mlflow()
        outcomes = _run_regions_in_process(regions, days, plan, log_dir)
        ok = all(o.success for o in outcomes)
        return outcomes, (run_global(plan, log_dir) if with_global and ok else None)
    initialize_instance()
    context = multiprocessing.get_context("spawn")
    with (
        ThreadPoolExecutor(max_workers=1) as setup,
        ProcessPoolExecutor(max_workers=min(parallel, len(regions)), mp_context=context) as pool,
    ):
        # The embedded MLflow store's schema is created here while the workers start and ingest
        # (2.7 s off the critical path). A worker that reaches MLflow first waits on the same
        # lock (MlflowTrackingResource.preflight) and finds the schema made.
        mlflow_ready = setup.submit(initialize_mlflow) if plan.train else None
        futures = {r: pool.submit(_run_region_in_child, r, days, plan, log_dir) for r in regions}
        outcomes = [_outcome(region, future) for region, future in futures.items()]
        if mlflow_ready is not None and mlflow_ready.exception() is not None:
            # Not raised: each region's own preflight met the same failure and its outcome
            # carries it (the summary names it per region).
            print(f"MLflow set-up failed: {mlflow_ready.exception()}", file=sys.stderr)
        if not (with_global and all(o.success for o in outcomes)):
            return outcomes, None
        # In a worker that ran a region: the main process never loads the definitions (2.2 s).
        return outcomes, _outcome("global", pool.submit(_run_global_in_child, plan, log_dir))


def _outcome(name: str, future) -> RegionOutcome:
    """A worker's outcome; a worker that died still gets a row in the summary."""
    try:
        return future.result()
    except Exception as exc:
        return RegionOutcome(name, error=f"worker process failed: {type(exc).__name__}: {exc}")


def quiet_libraries() -> None:
    """Keep library chatter out of the progress lines (it is in the UI and the region logs).

    A root handler stops `logging.warning(...)` calls from libraries from installing a
    stderr handler on the root logger (logging.basicConfig), through which every
    propagating logger would then print. What runs print to stdout or stderr goes to the
    region's log file (see `_execute`).
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", message=".*is currently in beta")
    logging.getLogger().addHandler(logging.NullHandler())
    # MLflow configures its own logger when first imported; this is read then.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
