"""Online-store materialization: the bulk path of `online_features` beside row-by-row writes.

Setup (not timed): one region-day of `--rows` transactions through ingestion, dbt and
the feature views (Dagster), so the warehouse holds a real `customer_spend_features` day.

Then, in one process, the same latest-row-per-entity sets written to a fresh SQLite
online store each time:
- `bulk`: what the asset does — DuckDB result as a polars frame, payload JSON encoded
  column-wise (`meridian.online_store.encode_frame`), one `executemany` per 50k rows;
- `row by row`: one `OnlineRow` (a Python dict) per entity, JSON per row, the same
  conditional upsert.
Each is the best of `--repeat` rounds; the stores are compared afterwards (same rows).

    python benchmarks/online_materialization.py            # 1M transactions
    python benchmarks/online_materialization.py --quick    # 100k

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

REGION = "us-east"
DAY = "2026-01-01"


def prepare(home: Path, rows: int) -> None:
    import dagster as dg

    from assets.definitions_file import load_definitions_module, prepare_environment
    from assets.features import feature_view_assets
    from assets.ingestion import labels_ingestion, transactions_ingestion
    from assets.transforms import regional_dbt_models
    from resources.lake import RegionalLakeResource
    from resources.source import TransactionSourceResource

    prepare_environment(home)
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=rows, malformed_rate=0.0),
    }
    key = dg.MultiPartitionKey({"region": REGION, "day": DAY})
    assets = [transactions_ingestion, labels_ingestion, regional_dbt_models, feature_view_assets]
    assert dg.materialize(assets, resources=resources, partition_key=str(key)).success


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--home", default=str(REPO_ROOT / "benchmarks" / ".work" / "online"))
    args = parser.parse_args()
    rows = 100_000 if args.quick else 1_000_000
    home = Path(args.home)
    shutil.rmtree(home, ignore_errors=True)
    os.environ["MERIDIAN_HOME"] = str(home)
    print(f"set-up: {REGION} {DAY}, {rows:,} transactions through ingestion, dbt and the feature views …")
    prepare(home, rows)

    import duckdb

    from assets.features import VIEWS
    from assets.online import latest_frame, online_rows
    from meridian.online_sqlite import SqliteOnlineStore
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    paths = region_paths(load_topology().region(REGION), home)
    con = duckdb.connect(str(paths.warehouse), read_only=True)

    def bulk(store):
        return sum(
            store.write_frame(v.name, v.version, latest_frame(con, v, DAY)).applied for v in VIEWS.values()
        )

    def row_by_row(store):
        return sum(store.write(online_rows(con, v, DAY)).applied for v in VIEWS.values())

    timings: dict[str, float] = {}
    written: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, fn in (("bulk", bulk), ("row_by_row", row_by_row)):
            target = home / f"{name}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            store = SqliteOnlineStore(target)
            started = time.perf_counter()
            written[name] = fn(store)
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - started)
            store.close()

    def content(path: Path) -> list[tuple]:
        # Payloads compared decoded: the two encoders may spell the same number differently.
        query = "select view, entity, event_time_us, version, payload from online_features order by 1, 2"
        rows = SqliteOnlineStore(path)._con().execute(query).fetchall()
        return [(*r[:4], orjson.loads(r[4])) for r in rows]

    same = content(home / "bulk.db") == content(home / "row_by_row.db")
    print(f"{'':<14}{'seconds':>10}{'rows/s':>14}")
    for name in ("bulk", "row_by_row"):
        print(f"{name:<14}{timings[name]:>10.2f}{written[name] / timings[name]:>14,.0f}")
    speedup = round(timings["row_by_row"] / timings["bulk"], 2)
    print(f"entities written: {written['bulk']:,}; identical stores: {same}; bulk is {speedup}× faster")
    print(
        json.dumps(
            {
                "benchmark": "online_materialization",
                "transactions": rows,
                "entities_written": written["bulk"],
                "bulk_s": round(timings["bulk"], 3),
                "row_by_row_s": round(timings["row_by_row"], 3),
                "speedup": speedup,
                "identical": same,
            }
        )
    )
    if not same:
        raise SystemExit("the bulk and row-by-row stores differ")


if __name__ == "__main__":
    main()
