"""`meridian`: run the main job on the embedded default and print what it did.

    meridian run [--days 21] [--regions us-east,eu-west] [--rows-per-day 5000] [--trials 15]
    meridian rollback --region eu-west [--to-version 3]

For each active region, `run` launches three Dagster runs on the persistent instance
under $MERIDIAN_HOME/dagster: the pipeline over the whole window (one single-run
backfill), `ml_training` for the region (training set, tuning, model, promotion), and
`batch_inference` over the last days. The UI shows every run and materialization
afterwards. A region's failure is reported and does not stop the other regions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import TextIO

from meridian.generator import HISTORY_START
from meridian.paths import REPO_ROOT, RegionPaths, meridian_home, region_paths
from meridian.settings import settings
from meridian.topology import Topology

LABEL_MATURITY_DAYS = 10  # dbt var label_maturity_days
# Days of matured, fully warmed-up labels the default window trains, validates and tests on.
DEFAULT_TRAINING_DAYS = 12


def warmup_days() -> int:
    """The longest feature warm-up (meridian.feature_views): rows before it are never trained on."""
    from meridian.feature_store import warmup_of
    from meridian.feature_views import feature_views

    return warmup_of(feature_views()).days


# A row is trainable once its windows are full (warm-up after the first day) and its label
# has matured (the chargeback window); the time split needs 3 such days.
MIN_TRAINING_DAYS = warmup_days() + LABEL_MATURITY_DAYS + 3
# The default window: warm-up, then training + validation + test days, then their labels' maturity.
DEFAULT_DAYS = warmup_days() + DEFAULT_TRAINING_DAYS + LABEL_MATURITY_DAYS
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


def load_definitions_module() -> ModuleType:
    """platform/definitions.py, loaded by path as workspace.yaml does."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    spec = importlib.util.spec_from_file_location(
        "meridian_definitions", REPO_ROOT / "platform" / "definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    outcome = RegionOutcome(region, started=time.monotonic())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{region}-{uuid.uuid4().hex[:8]}.log"
    base_tags = {"meridian/region": region, "meridian/launched_by": "meridian-cli"}

    def ranged(first: str, last: str) -> dict[str, str]:
        return {
            ASSET_PARTITION_RANGE_START_TAG: str(MultiPartitionKey({"region": region, "day": first})),
            ASSET_PARTITION_RANGE_END_TAG: str(MultiPartitionKey({"region": region, "day": last})),
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
    return outcome


def run_global(plan: RunPlan, log_dir: Path, module: ModuleType | None = None) -> RegionOutcome:
    """The global services once every region is done: shared aggregates, audit, catalog, cost."""
    from dagster import DagsterInstance

    outcome = RegionOutcome("global", started=time.monotonic())
    log_dir.mkdir(parents=True, exist_ok=True)
    defs = (module or load_definitions_module()).defs
    with DagsterInstance.get() as instance:
        log_path = log_dir / f"global-{uuid.uuid4().hex[:8]}.log"
        tags = {"meridian/launched_by": "meridian-cli"}
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


def _lake_rows(paths: RegionPaths, table: str, days: list[str]) -> int:
    from meridian.lake import parquet_row_count, partition_file

    files = [partition_file(paths.table(table), d) for d in days]
    return sum(parquet_row_count(f) for f in files if f.exists())


def _warehouse_rows(paths: RegionPaths, table: str, days: list[str]) -> int | str:
    import duckdb

    from meridian.locks import file_lock

    if not paths.warehouse.exists():
        return "-"
    try:
        with (
            file_lock(paths.warehouse_lock, shared=True),
            duckdb.connect(str(paths.warehouse), read_only=True) as con,
        ):
            query = f"select count(*) from {table} where event_day between ? and ?"
            return con.execute(query, [days[0], days[-1]]).fetchall()[0][0]
    except duckdb.Error:
        return "-"


def summarize(outcomes: list[RegionOutcome], days: list[str], topology: Topology) -> list[dict[str, object]]:
    """One row per region, counted from what landed in its lake and warehouse."""
    rows = []
    for o in outcomes:
        paths = region_paths(topology.region(o.region))
        rows.append(
            {
                "region": o.region,
                "status": "ok" if o.success else "FAILED",
                "days": len(days),
                "transactions": _lake_rows(paths, "raw_transactions", days),
                "quarantined": _lake_rows(paths, "quarantined_transactions", days),
                "chargebacks": _lake_rows(paths, "raw_labels", days),
                "feature_rows": _warehouse_rows(paths, "customer_spend_features", days),
                "model": f"v{o.captured['model_version']}" if "model_version" in o.captured else "-",
                "test_pr_auc": o.captured.get("test_pr_auc", "-"),
                "test_roc_auc": o.captured.get("test_roc_auc", "-"),
                "promotion": o.captured.get("decision", "-"),
                "champion": f"v{o.captured['champion_version']}" if "champion_version" in o.captured else "-",
                "scored": o.captured.get("run_total_rows", "-"),
                "drift days ok/warn/error": _drift_days(o.captured.get("region_days_by_worst_status")),
                "checks": f"{o.checks_passed} ok / {o.checks_warned} warn / {o.checks_failed} failed",
                "seconds": f"{o.seconds:.1f}",
            }
        )
    return rows


def _drift_days(counts: object) -> str:
    if not isinstance(counts, dict):
        return "-"
    return (
        f"{counts.get('ok', 0) + counts.get('no_data', 0)}/{counts.get('warn', 0)}/{counts.get('error', 0)}"
    )


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
    _quiet_libraries()
    return _run_regions_in_process([region], days, plan, log_dir)[0]


def run_regions(
    regions: list[str], days: list[str], plan: RunPlan, log_dir: Path, parallel: int
) -> list[RegionOutcome]:
    """Each region as its own runs; with parallel > 1, that many regions at once in worker processes."""
    if plan.train:
        initialize_mlflow()
    if parallel <= 1 or len(regions) == 1:
        return _run_regions_in_process(regions, days, plan, log_dir)
    initialize_instance()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(parallel, len(regions)), mp_context=context) as pool:
        futures = {r: pool.submit(_run_region_in_child, r, days, plan, log_dir) for r in regions}
        outcomes = []
        for region, future in futures.items():
            try:
                outcomes.append(future.result())
            except Exception as exc:  # a worker that died still gets a row in the summary
                outcomes.append(
                    RegionOutcome(region, error=f"worker process failed: {type(exc).__name__}: {exc}")
                )
        return outcomes


def cmd_run(args: argparse.Namespace) -> int:
    home = prepare_environment(Path(args.home) if args.home else None)
    from meridian.report import text_table
    from meridian.topology import load_topology

    topology = load_topology(settings().topology_path)
    regions = args.regions.split(",") if args.regions else topology.active_region_names
    unknown = [r for r in regions if r not in topology.active_region_names]
    if unknown:
        print(
            f"meridian: error: unknown or standby region(s) {', '.join(map(repr, unknown))}; "
            f"active regions in regions.yaml: {', '.join(topology.active_region_names)}",
            file=sys.stderr,
        )
        return 2
    start = date.fromisoformat(args.start)
    days = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    train = not args.skip_ml and len(days) >= MIN_TRAINING_DAYS
    source_config = {"rows_per_day": args.rows_per_day, "malformed_rate": args.malformed_rate}
    # Progress comes from the event listener; the console shows errors only (full logs are in the UI).
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    tuning = {"n_trials": args.trials, "timeout_seconds": args.tuning_seconds}
    plan = RunPlan(
        pipeline_config={"resources": {"source": {"config": source_config}}, **quiet},
        training_config={"ops": {"fraud_model_hyperparameters": {"config": tuning}}, **quiet},
        quiet_config=quiet,
        train=train,
        score_days=min(args.score_days, len(days)) if train else 0,
    )
    print(f"Meridian home: {home}")
    print(
        f"Materializing {days[0]}..{days[-1]} ({len(days)} days) for {', '.join(regions)}; "
        f"{args.rows_per_day:,} transactions per region-day, {args.parallel} region(s) at a time\n",
        flush=True,
    )
    if not train and not args.skip_ml:
        print(
            f"Training and scoring skipped: {len(days)} days hold no trainable history (labels mature "
            f"{LABEL_MATURITY_DAYS} days after the transaction and the time split needs 3 matured days, "
            f"so at least {MIN_TRAINING_DAYS} days)\n",
            flush=True,
        )
    # The global run's definitions load while the regions run (the main process waits anyway).
    with ThreadPoolExecutor(max_workers=1) as loader:
        module = loader.submit(load_definitions_module) if plan.train and args.parallel > 1 else None
        outcomes = run_regions(regions, days, plan, home / "logs", args.parallel)
        preloaded = module.result() if module is not None else None
    ok = all(o.success for o in outcomes)
    glob = run_global(plan, home / "logs", preloaded) if plan.train and ok else None
    print("\nSummary")
    print(text_table(summarize(outcomes, days, topology)))
    if glob is not None:
        audit = "passed" if glob.captured.get("passed") else "FAILED"
        print(
            f"\nGlobal: residency audit {audit} ({glob.captured.get('files_scanned', '?')} files scanned), "
            f"replication breaches: {glob.captured.get('breaches', '?')}, "
            f"cost report total: ${glob.captured.get('total_usd', '?')} "
            f"(catalog, audit and cost in {home / 'platform'})"
        )
    for o in [*outcomes, *([glob] if glob else [])]:
        if o.error:
            print(f"\n{o.region} failed: {o.error}")
    print(
        "\nBrowse the graph, runs and metadata in the Dagster UI:\n"
        f"  DAGSTER_HOME={os.environ['DAGSTER_HOME']} MERIDIAN_HOME={home} "
        ".venv/bin/dagster dev -w workspace.yaml   # then open http://127.0.0.1:3000"
    )
    if plan.train:
        print(
            "Experiments and registered models (fraud-<region>, aliases champion/challenger) in the MLflow UI:\n"
            f"  .venv/bin/mlflow ui --backend-store-uri sqlite:///{home / 'mlflow' / 'mlflow.db'}"
            "   # then open http://127.0.0.1:5000"
        )
    return 0 if all(o.success for o in outcomes) and (glob is None or glob.success) else 1


def _active_region_or_error(region: str) -> bool:
    from meridian.topology import load_topology

    active = load_topology(settings().topology_path).active_region_names
    if region not in active:
        print(
            f"meridian: error: unknown or standby region {region!r}; active regions: {', '.join(active)}",
            file=sys.stderr,
        )
        return False
    return True


def _launch_op_job(module: ModuleType, job_name: str, op_name: str, config: dict, region: str, what: str):
    """Run a one-op job on the persistent instance (it shows in the UI); the result, or None
    after printing the step's error."""
    from dagster import DagsterInstance

    job = module.defs.resolve_job_def(job_name)
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            run_config={
                "ops": {op_name: {"config": config}},
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            tags={"meridian/region": region, "meridian/launched_by": "meridian-cli"},
            raise_on_error=False,
        )
    if result.success:
        return result
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failures[0].event_specific_data.error.message if failures else "run failed"
    message = message.strip().removeprefix("dagster._core.definitions.events.Failure: ")
    print(f"meridian: {what} failed: {message} (Dagster run {result.run_id})", file=sys.stderr)
    return None


def cmd_failover(args: argparse.Namespace) -> int:
    """Launch `region_failover` (failover or failback) on the persistent instance."""
    prepare_environment(Path(args.home) if args.home else None)
    if not _active_region_or_error(args.region):
        return 2
    action = "failback" if args.failback else "failover"
    config = {"region": args.region, "action": action, "reason": args.reason}
    result = _launch_op_job(
        load_definitions_module(), "region_failover", "region_failover_op", config, args.region, action
    )
    if result is None:
        return 1
    report = result.output_for_node("region_failover_op")
    detail = (
        f"replica versions {report['replica_versions']}"
        if action == "failover"
        else f"reconciled {report['reconciled']}, RPO {report['rpo_partitions']} partition(s) "
        f"{report['rpo_files'][:5]}"
    )
    print(
        f"{args.region}: {action} done in {report['seconds']:.2f}s, served from {report['serving_region']}; {detail}"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Launch the `rollback_champion` job on the persistent instance (it shows in the UI)."""
    prepare_environment(Path(args.home) if args.home else None)
    if not _active_region_or_error(args.region):
        return 2
    config = {"region": args.region, **({"to_version": args.to_version} if args.to_version else {})}
    module = load_definitions_module()
    result = _launch_op_job(
        module, "rollback_champion", "rollback_champion_op", config, args.region, "rollback"
    )
    if result is None:
        return 1
    from meridian import registry

    client = module.build_resources(settings().profile)["mlflow_tracking"].client()
    champion = registry.alias_version(client, registry.model_name(args.region), registry.CHAMPION)
    print(
        f"{registry.model_name(args.region)}: champion is now version {champion} (Dagster run {result.run_id})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The scoring service (serving/) on the embedded default, after `meridian run`."""
    prepare_environment(Path(args.home) if args.home else None)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import uvicorn

    from serving.main import build_app

    regions = args.regions.split(",") if args.regions else None
    app = build_app(poll_seconds=args.poll_seconds, regions=regions)
    print(
        f"Meridian scoring service on http://{args.host}:{args.port} (OpenAPI: /docs, /openapi.json)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _quiet_libraries() -> None:
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


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = argparse.ArgumentParser(prog="meridian", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize the regional graph for a window of days")
    run.add_argument("--start", default=HISTORY_START.isoformat(), help="first day (YYYY-MM-DD)")
    run.add_argument("--days", type=int, default=DEFAULT_DAYS, help="number of days")
    run.add_argument("--regions", help="comma-separated regions (default: every active region)")
    run.add_argument("--rows-per-day", type=int, default=5_000, help="transactions per region-day")
    run.add_argument("--malformed-rate", type=float, default=0.002, help="share of malformed rows injected")
    run.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    run.add_argument(
        "--parallel",
        type=int,
        # One more worker than cores: a region's run waits on the instance's SQLite event writes
        # (fsync per event) about a third of the time, which another region's work fills.
        default=min(3, (os.cpu_count() or 1) + 1),
        help="regions run at once (default: cores + 1, at most 3)",
    )
    run.add_argument("--trials", type=int, default=15, help="hyperparameter trials per region")
    run.add_argument(
        "--tuning-seconds", type=float, default=90.0, help="time budget of the search per region"
    )
    run.add_argument(
        "--score-days",
        type=int,
        default=12,
        help="last days of the window to score (12: the matured test days, whose performance shows, and after)",
    )
    run.add_argument("--skip-ml", action="store_true", help="ingest and transform only")
    run.set_defaults(func=cmd_run)
    back = sub.add_parser("rollback", help="return a region's champion model to the previous champion")
    back.add_argument("--region", required=True, help="active region whose champion to roll back")
    back.add_argument(
        "--to-version", type=int, help="an earlier champion version (default: the previous one)"
    )
    back.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    back.set_defaults(func=cmd_rollback)
    fo = sub.add_parser("failover", help="serve a region from its DR region (or --failback)")
    fo.add_argument("--region", required=True, help="active region to fail over")
    fo.add_argument("--failback", action="store_true", help="reconcile and return the region to its own site")
    fo.add_argument("--reason", default="manual failover from the CLI")
    fo.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    fo.set_defaults(func=cmd_failover)
    srv = sub.add_parser("serve", help="start the scoring service (after `meridian run`)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--regions", help="comma-separated regions to serve (default: every active region)")
    srv.add_argument("--poll-seconds", type=float, default=2.0, help="how often model aliases are checked")
    srv.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    srv.set_defaults(func=cmd_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
