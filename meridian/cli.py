"""`meridian`: run the main job on the embedded default and print what it did.

    meridian run [--days 21] [--regions us-east,eu-west] [--rows-per-day 5000]

Each active region runs as its own Dagster run (one single-run backfill of the whole
window) on the persistent instance under $MERIDIAN_HOME/dagster, so the UI shows every
run and materialization afterwards. A region's failure is reported and does not stop
the other regions.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import TextIO

from meridian.generator import HISTORY_START
from meridian.paths import REPO_ROOT, RegionPaths, meridian_home, region_paths
from meridian.topology import Topology

DEFAULT_DAYS = 21
STAGES = {
    "transactions_ingestion": "ingest transactions",
    "labels_ingestion": "ingest chargebacks",
    "regional_dbt_models": "dbt build",
    "feature_views": "feature views",
}


def prepare_environment(home: Path | None = None) -> Path:
    """Point MERIDIAN_HOME and DAGSTER_HOME at the data root and install the instance config."""
    home = (home or meridian_home()).resolve()
    os.environ["MERIDIAN_HOME"] = str(home)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    shutil.copyfile(REPO_ROOT / "platform" / "dagster.yaml", dagster_home / "dagster.yaml")
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
    error: str | None = None


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
        elif kind == "ASSET_CHECK_EVALUATION":
            if event.event_specific_data.passed:
                outcome.checks_passed += 1
            else:
                outcome.checks_failed += 1

    return on_event


def run_region(job, instance, region: str, days: list[str], run_config: dict, log_dir: Path) -> RegionOutcome:
    """One in-process run over the region's whole window; dbt's chatter goes to a log file."""
    from dagster import MultiPartitionKey
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    outcome = RegionOutcome(region)
    started = time.monotonic()
    run_id = str(uuid.uuid4())
    instance.add_event_listener(run_id, _progress_listener(outcome, started, sys.stdout))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{region}-{run_id[:8]}.log"
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(MultiPartitionKey({"region": region, "day": days[0]})),
        ASSET_PARTITION_RANGE_END_TAG: str(MultiPartitionKey({"region": region, "day": days[-1]})),
        "meridian/region": region,
        "meridian/launched_by": "meridian-cli",
    }
    try:
        with open(log_path, "w") as log, contextlib.redirect_stdout(log):
            result = job.execute_in_process(
                instance=instance, run_id=run_id, tags=tags, run_config=run_config, raise_on_error=False
            )
        outcome.success = result.success
        if not result.success:
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            outcome.error = (failures[0].message if failures else "run failed") + f" (log: {log_path})"
    except Exception as exc:  # one region's crash must not stop the others
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.monotonic() - started
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
                "checks": f"{o.checks_passed} ok / {o.checks_failed} failed",
                "seconds": f"{o.seconds:.1f}",
            }
        )
    return rows


def initialize_instance() -> None:
    """Create (or migrate) the instance's SQLite storages once, before any worker starts.

    Workers that open a brand-new instance at the same moment both create its schedule
    database and stamp its schema version twice; the instance then refuses to open
    ("alembic_version has more than one head").
    """
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)


def _run_regions_in_process(
    regions: list[str], days: list[str], run_config: dict, log_dir: Path
) -> list[RegionOutcome]:
    """Regions one after another, sharing one load of the definitions and one instance."""
    from dagster import DagsterInstance

    job = load_definitions_module().defs.resolve_job_def("regional_pipeline")
    with DagsterInstance.get() as instance:
        return [run_region(job, instance, region, days, run_config, log_dir) for region in regions]


def _run_region_in_child(region: str, days: list[str], run_config: dict, log_dir: Path) -> RegionOutcome:
    """Entry point of a worker process: its own definitions, instance connection and dbt."""
    return _run_regions_in_process([region], days, run_config, log_dir)[0]


def run_regions(
    regions: list[str], days: list[str], run_config: dict, log_dir: Path, parallel: int
) -> list[RegionOutcome]:
    """Each region as its own run; with parallel > 1, that many regions at once in worker processes."""
    if parallel <= 1 or len(regions) == 1:
        return _run_regions_in_process(regions, days, run_config, log_dir)
    initialize_instance()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(parallel, len(regions)), mp_context=context) as pool:
        futures = {r: pool.submit(_run_region_in_child, r, days, run_config, log_dir) for r in regions}
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

    topology = load_topology(os.environ.get("MERIDIAN_TOPOLOGY"))
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
    source_config = {"rows_per_day": args.rows_per_day, "malformed_rate": args.malformed_rate}
    run_config = {
        "resources": {"source": {"config": source_config}},
        # Progress comes from the event listener; the console shows errors only (full logs are in the UI).
        "loggers": {"console": {"config": {"log_level": "ERROR"}}},
    }
    print(f"Meridian home: {home}")
    print(
        f"Materializing {days[0]}..{days[-1]} ({len(days)} days) for {', '.join(regions)}; "
        f"{args.rows_per_day:,} transactions per region-day, {args.parallel} region(s) at a time\n",
        flush=True,
    )
    outcomes = run_regions(regions, days, run_config, home / "logs", args.parallel)
    print("\nSummary")
    print(text_table(summarize(outcomes, days, topology)))
    for o in outcomes:
        if o.error:
            print(f"\n{o.region} failed: {o.error}")
    print(
        "\nBrowse the graph, runs and metadata in the Dagster UI:\n"
        f"  DAGSTER_HOME={os.environ['DAGSTER_HOME']} MERIDIAN_HOME={home} "
        ".venv/bin/dagster dev -w workspace.yaml   # then open http://127.0.0.1:3000"
    )
    return 0 if all(o.success for o in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
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
        default=min(2, os.cpu_count() or 1),
        help="regions run at once (default: up to 2)",
    )
    run.set_defaults(func=cmd_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
