"""The region's warehouse follows the lake's Delta tables, incrementally, by their commit logs.

dbt-duckdb reads the lake through Arrow: the pinned DuckDB has no installable `delta` or
`httpfs` extension, and delta-rs hands out a table version as a `pyarrow.dataset` on either a
local folder or the region's object store, with partition pruning and predicate pushdown
into the files. Scanning that dataset on every read of `stg_transactions` (a view that
Python code reads too, outside dbt) would tie every reader to an Arrow registration that
only lives in dbt's connection, so the warehouse keeps a copy instead, in the schema `lake`:

- first sync (or after a schema change, or when the log between two versions was cleaned
  up): the table at its version, loaded whole;
- after that: only the partitions the new commits touched (read from the log's add and
  remove actions) are deleted and loaded again, in one DuckDB transaction with the synced
  version (`lake._synced`), so a crash leaves the previous synced state, never half of one.

`sync_lake(versions=...)` loads the tables at given versions instead of their newest: that is
how a training set is rebuilt from the exact data it was built from (meridian.training_set
records the versions on the MLflow run).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb

from meridian.lake_tables import LakeLocation, LakeTable

SYNCED_TABLES = ("raw_transactions", "raw_labels")
SCHEMA = "lake"
STATE = f"{SCHEMA}._synced"
# Tables derived from a synced table, rebuilt in the same transaction as every load of it,
# so they always describe the rows the warehouse holds. `raw_transactions_repeated`: the ids
# the lake holds more than once. stg_transactions (a view) needs them to reconcile copies,
# over the whole lake whatever days a query reads; every dbt node and test that read the
# view grouped all of the lake's ids again (15M at 500k rows a day: 2.3 s each, about a dozen tests and
# 4 models per build, and a group-by's cost per row grows with its hash table;
# benchmarks/scaling.py). It is almost always empty, so the view then costs what the days
# it is asked for cost.
DERIVED = {
    "raw_transactions": {
        "raw_transactions_repeated": (
            "select transaction_id, count(*) as copies from {source} group by transaction_id having count(*) > 1"
        )
    }
}


@dataclass(frozen=True)
class TableSync:
    table: str
    version: int | None  # the lake version the warehouse now holds (None: no table in the lake)
    previous: int | None
    mode: str  # "unchanged", "incremental", "full" or "absent"
    partitions: int  # partitions reloaded (incremental)
    rows: int  # rows loaded
    seconds: float


def synced_versions(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The lake versions the warehouse holds, by table (empty before the first sync)."""
    exists = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = '_synced'",
        [SCHEMA],
    ).fetchall()[0][0]
    if not exists:
        return {}
    return dict(con.execute(f"select table_name, version from {STATE}").fetchall())


def sync_lake(
    con: duckdb.DuckDBPyConnection,
    location: LakeLocation,
    tables: Sequence[str] = SYNCED_TABLES,
    versions: Mapping[str, int] | None = None,
) -> list[TableSync]:
    con.execute(f"create schema if not exists {SCHEMA}").fetchall()
    con.execute(
        f"create table if not exists {STATE} (table_name varchar primary key, version bigint not null, synced_at timestamptz not null)"
    ).fetchall()
    held = synced_versions(con)
    return [
        _sync_one(con, location.table(name), held.get(name), None if versions is None else versions.get(name))
        for name in tables
    ]


def _sync_one(
    con: duckdb.DuckDBPyConnection, table: LakeTable, previous: int | None, pinned: int | None
) -> TableSync:
    started = time.perf_counter()
    version = pinned if pinned is not None else table.version()
    target = f"{SCHEMA}.{table.name}"
    if version is None:
        return TableSync(table.name, None, previous, "absent", 0, 0, 0.0)
    present = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [SCHEMA, table.name],
    ).fetchall()[0][0]
    if present and previous == version:
        if _derived_missing(con, table.name):  # a warehouse synced before the table was derived
            con.execute("begin transaction").fetchall()
            _derive(con, table.name)
            con.execute("commit").fetchall()
        return TableSync(table.name, version, previous, "unchanged", 0, 0, time.perf_counter() - started)
    changed = None
    if present and previous is not None and previous < version and pinned is None:
        changed = table.changed_partitions(previous, version)
    dataset = table.dataset(version)
    con.register("_lake_dataset", dataset)
    try:
        con.execute("begin transaction").fetchall()
        if changed is None:
            con.execute(f"create or replace table {target} as select * from _lake_dataset").fetchall()
            rows = con.execute(f"select count(*) from {target}").fetchall()[0][0]
            mode, partitions = "full", 0
        else:
            rows = 0
            for partition in changed:
                condition = " and ".join(f"{column} = ?" for column in partition)
                values = list(partition.values())
                con.execute(f"delete from {target} where {condition}", values).fetchall()
                rows += con.execute(
                    f"insert into {target} by name select * from _lake_dataset where {condition}", values
                ).fetchall()[0][0]
            mode, partitions = "incremental", len(changed)
        _derive(con, table.name)
        con.execute(f"insert or replace into {STATE} values (?, ?, now())", [table.name, version]).fetchall()
        con.execute("commit").fetchall()
    except BaseException:
        con.execute("rollback").fetchall()
        raise
    finally:
        con.unregister("_lake_dataset")
    return TableSync(table.name, version, previous, mode, partitions, rows, time.perf_counter() - started)


def _derive(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Rebuild the tables derived from `table` (inside the caller's transaction)."""
    for name, sql in DERIVED.get(table, {}).items():
        query = sql.format(source=f"{SCHEMA}.{table}")
        con.execute(f"create or replace table {SCHEMA}.{name} as {query}").fetchall()


def _derived_missing(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    names = list(DERIVED.get(table, {}))
    if not names:
        return False
    found = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name in "
        f"({', '.join('?' * len(names))})",
        [SCHEMA, *names],
    ).fetchall()[0][0]
    return found < len(names)
