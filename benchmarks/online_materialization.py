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

`--growth` measures instead how the cost per row moves as the store grows: six days of
upserts (70 % of the entities changed a day, in the random order a day's query returns
them) into a store of 50k and of 500k entities, written as `write_frame` does (in the
key's order) beside the same upserts in arrival order (what it did before), in one process.

    python benchmarks/online_materialization.py            # 1M transactions
    python benchmarks/online_materialization.py --quick    # 100k
    python benchmarks/online_materialization.py --growth   # cost per row, 50k vs 500k entities

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


def growth(home: Path, sizes: tuple[int, ...] = (50_000, 500_000), days: int = 6) -> None:
    """Microseconds per upserted row at each store size, key order (as shipped) vs arrival order."""
    import numpy as np
    import polars as pl

    from meridian.online_sqlite import SqliteOnlineStore

    def day_frame(n: int, day: int, rng) -> pl.DataFrame:
        ids = pl.Series(rng.permutation(n)[: int(n * 0.7)]).cast(pl.String)
        return pl.DataFrame(
            {
                "entity": "usc" + ids,
                "event_time_us": np.full(len(ids), day * 86_400_000_000, dtype=np.int64),
                "payload": '{"spend_1d":' + ids + ',"spend_7d":1234.5,"spend_30d":9876.5,"txn_count_1d":3,'
                '"txn_count_7d":17,"txn_count_30d":61,"avg_amount_30d":123.45}',
            }
        )

    def arrival_order(store: SqliteOnlineStore, frame: pl.DataFrame) -> None:
        con = store._con()
        with con:
            for chunk in frame.iter_slices(50_000):
                con.executemany(
                    store.UPSERT,
                    [("customer_spend", e, t, "v1", p, 1, "") for e, t, p in chunk.iter_rows()],
                )

    def key_order(store: SqliteOnlineStore, frame: pl.DataFrame) -> None:
        store.write_frame("customer_spend", "v1", frame)

    home.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[int, float]] = {"arrival order (before)": {}, "key order (write_frame)": {}}
    contents = {}
    for n in sizes:
        for label, write in zip(figures, (arrival_order, key_order), strict=True):
            target = home / f"growth-{n}-{label.split()[0]}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            store = SqliteOnlineStore(target)
            rng = np.random.default_rng(7)
            frames = [day_frame(n, day + 1, rng) for day in range(days)]
            started = time.perf_counter()
            for frame in frames:
                write(store, frame)
            figures[label][n] = (time.perf_counter() - started) / sum(f.height for f in frames) * 1e6
            contents[label] = (
                store._con()
                .execute("select entity, event_time_us, payload from online_features order by 1")
                .fetchall()
            )
            store.close()
        if contents["arrival order (before)"] != contents["key order (write_frame)"]:
            raise SystemExit(f"the two orders left different stores at {n:,} entities")
    print(f"load average {os.getloadavg()[0]:.2f}; {days} days of upserts, 70 % of the entities a day")
    print(f"{'':<26}" + "".join(f"{f'{n:,} entities':>18}" for n in sizes) + f"{'growth':>10}")
    for label, by_size in figures.items():
        cells = "".join(f"{by_size[n]:>15.2f} us" for n in sizes)
        print(f"{label:<26}{cells}{by_size[sizes[-1]] / by_size[sizes[0]]:>9.2f}x")
    print("identical stores: True")
    print(json.dumps({"benchmark": "online_growth", "us_per_row": figures}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--growth", action="store_true", help="cost per row as the store grows")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--home", default=str(REPO_ROOT / "benchmarks" / ".work" / "online"))
    args = parser.parse_args()
    if args.growth:
        growth(Path(args.home))
        return
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
