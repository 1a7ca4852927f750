"""Ingest and dbt-transform 7 days of one region through Dagster, beside the floor.

The floor is the same work without Dagster and without the dbt CLI: the same Python
generator, validation and atomic Parquet writes, then the SQL that dbt compiles for
the same models and tests, executed directly in DuckDB in dependency order, and the same
online-store writes the pipeline's `online_features` asset makes.

Each measurement runs in a child process of this script (so imports and caches of one
path never help the other); its wall time and the peak RSS of its whole process tree
(dbt's subprocess included) are sampled from here.

    python benchmarks/ingest_and_transform.py            # 100k and 1M rows/day
    python benchmarks/ingest_and_transform.py --quick    # a small size, under a minute

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from harness import measure_child  # noqa: E402

REGION = "us-east"
START = date(2026, 1, 1)
MODEL_ORDER = (
    "stg_transactions",
    "stg_labels",
    "customer_spend_features",
    "merchant_risk_features",
    "labelled_events",
)


def _days(n: int) -> list[str]:
    return [(START + timedelta(days=i)).isoformat() for i in range(n)]


def _profile_settings() -> dict[str, object]:
    import yaml

    profiles = yaml.safe_load((REPO_ROOT / "dbt_project" / "profiles.yml").read_text())
    return profiles["meridian"]["outputs"]["local"].get("settings", {})


# ---------------------------------------------------------------- child phases
def phase_dagster(home: Path, rows: int, n_days: int) -> None:
    os.environ["MERIDIAN_HOME"] = str(home)
    from assets.definitions_file import load_definitions_module
    from cli.runs import RunPlan, prepare_environment, run_region

    prepare_environment(home)
    import dagster as dg

    defs = load_definitions_module().defs
    plan = RunPlan.pipeline_only(rows)
    with dg.DagsterInstance.get() as instance:
        outcome = run_region(defs, instance, REGION, _days(n_days), plan, home / "logs")
    if not outcome.success:
        raise SystemExit(f"dagster run failed: {outcome.error}")


def phase_direct(home: Path, rows: int, n_days: int, compiled: Path) -> None:
    import duckdb

    from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
    from meridian.lake_sync import sync_lake
    from meridian.paths import region_paths
    from meridian.topology import load_topology
    from meridian.validation import validate_labels, validate_transactions

    region = load_topology().region(REGION)
    paths = region_paths(region, home)
    cfg = GeneratorConfig(rows_per_day=rows)
    for d in _days(n_days):
        day = date.fromisoformat(d)
        tx = validate_transactions(generate_transactions(cfg, region, day).rows, day, region)
        paths.lake_table("raw_transactions").replace(tx.accepted, day=d, origin="source")
        paths.lake_table("quarantined_transactions").replace(tx.quarantined, day=d, origin="source")
        lb = validate_labels(generate_labels(cfg, region, day).rows, day)
        paths.lake_table("raw_labels").replace(lb.accepted, day=d)
        paths.lake_table("quarantined_labels").replace(lb.quarantined, day=d)
    models = compiled / "models"
    con = duckdb.connect(str(paths.warehouse))
    for name, value in _profile_settings().items():  # the same DuckDB settings dbt uses
        con.execute(f"set {name} = '{value}'")
    sync_lake(con, paths.lake_location)  # as dbt's plugin does when it opens the warehouse
    con.execute(
        "create or replace table currency_rates as select * from read_csv(?, header = true, "
        "columns = {'currency': 'varchar', 'units_per_usd': 'double'})",
        [str(REPO_ROOT / "dbt_project" / "seeds" / "currency_rates.csv")],
    )
    for name in MODEL_ORDER:
        sql = next(models.rglob(f"{name}.sql")).read_text()
        kind = "view" if name.startswith("stg_") else "table"
        con.execute(f"create or replace {kind} {name} as {sql}")
    failures = 0
    for test in sorted((compiled / "tests").rglob("*.sql")) + sorted(models.rglob("*/*.yml/*.sql")):
        failures += con.execute(f"select count(*) from ({test.read_text()})").fetchall()[0][0]
    # The pipeline also keeps the online store current (assets/online.py): the same writes here.
    from assets.features import VIEWS
    from assets.online import latest_frame
    from meridian.online_sqlite import SqliteOnlineStore

    store = SqliteOnlineStore(paths.root / "online" / "online_store.db")
    for d in _days(n_days):
        for view in VIEWS.values():
            store.write_frame(view.name, view.version, latest_frame(con, view, d))
    store.close()
    con.close()
    if failures:
        raise SystemExit(f"direct path: {failures} failing test rows")


# ---------------------------------------------------------------- parent
def _measure(args: list[str]) -> tuple[float, float]:
    return measure_child(__file__, args)


def _compile(home: Path, n_days: int) -> Path:
    """Compile the dbt models and tests for a full build of the window (the floor runs this SQL)."""
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    paths = region_paths(load_topology().region(REGION), home)
    paths.root.mkdir(parents=True, exist_ok=True)
    target = home / "dbt-target"
    dbt_vars = {
        "region": REGION,
        "lake_root": str(paths.lake),
        "warehouse_path": str(paths.warehouse),
        "min_day": _days(n_days)[0],
        "max_day": _days(n_days)[-1],
    }
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run(
        [
            str(dbt),
            "compile",
            "--quiet",
            "--profiles-dir",
            ".",
            "--target-path",
            str(target),
            "--vars",
            json.dumps(dbt_vars),
        ],
        cwd=REPO_ROOT / "dbt_project",
        check=True,
    )
    paths.warehouse.unlink(missing_ok=True)  # compile opens the warehouse; the floor starts empty
    return target / "compiled" / "meridian"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size (runs in under a minute)")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--phase", choices=["dagster", "direct"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--compiled", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "dagster":
        return phase_dagster(Path(args.home), args.rows, args.days)
    if args.phase == "direct":
        return phase_direct(Path(args.home), args.rows, args.days, Path(args.compiled))

    sizes = [20_000] if args.quick else [100_000, 1_000_000]
    days = 3 if args.quick else args.days
    results = []
    print(f"ingest + dbt transform, region {REGION}, {days} days, {os.cpu_count()} cores")
    print(f"{'rows/day':>10} {'path':<22} {'seconds':>8} {'peak RSS MB':>12}")
    for rows in sizes:
        work = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
        try:
            compiled = _compile(work / "direct", days)
            d_s, d_mb = _measure(
                [
                    "--phase",
                    "direct",
                    "--home",
                    str(work / "direct"),
                    "--rows",
                    str(rows),
                    "--days",
                    str(days),
                    "--compiled",
                    str(compiled),
                ]
            )
            print(f"{rows:>10,} {'direct DuckDB (floor)':<22} {d_s:>8.1f} {d_mb:>12.0f}", flush=True)
            g_s, g_mb = _measure(
                [
                    "--phase",
                    "dagster",
                    "--home",
                    str(work / "dagster"),
                    "--rows",
                    str(rows),
                    "--days",
                    str(days),
                ]
            )
            print(f"{rows:>10,} {'through Dagster + dbt':<22} {g_s:>8.1f} {g_mb:>12.0f}", flush=True)
            print(f"{'':>10} {'ratio Dagster/direct':<22} {g_s / d_s:>8.2f}", flush=True)
            results.append(
                {
                    "rows_per_day": rows,
                    "days": days,
                    "dagster_s": round(g_s, 2),
                    "direct_s": round(d_s, 2),
                    "overhead_ratio": round(g_s / d_s, 3),
                    "dagster_peak_rss_mb": round(g_mb),
                    "direct_peak_rss_mb": round(d_mb),
                }
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    last = results[-1]
    print(
        json.dumps(
            {
                "benchmark": "ingest_and_transform",
                "quick": args.quick,
                "overhead_ratio": last["overhead_ratio"],
                "peak_rss_mb": last["dagster_peak_rss_mb"],
                "at_rows_per_day": last["rows_per_day"],
                "targets": {"overhead_ratio": 1.5, "peak_rss_mb": 4096},
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
