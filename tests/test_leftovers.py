"""What a killed writer leaves behind is cleaned by the next run, and nothing a live writer owns."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import polars as pl

from assets.definitions_file import load_definitions_module
from assets.ingestion import transactions_ingestion
from meridian.lake import (
    ORPHAN_AGE_S,
    partition_file,
    sweep_temporaries,
    temporary_name,
    write_parquet_atomic,
)
from meridian.paths import REPO_ROOT, region_paths
from meridian.replication import Replica, walk
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource


def _killed(code: str, failpoint: str) -> None:
    env = {**os.environ, "MERIDIAN_FAILPOINT": failpoint, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT, capture_output=True
    )
    assert done.returncode == -9, done.stderr[-2000:]


def _temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*.tmp"))


def test_a_killed_lake_write_leaves_a_temporary_that_the_next_ingestion_removes(tmp_path, topology):
    """Before: `.data.parquet.<uuid>.tmp` files of killed runs stayed in the lake for good."""
    home = tmp_path / "home"
    paths = region_paths(topology.region("us-east"), home)
    target = partition_file(paths.table("predictions"), "2026-01-02")  # a Parquet table of the lake
    _killed(
        f"""
        import polars as pl
        from pathlib import Path
        from meridian.lake import write_parquet_atomic
        write_parquet_atomic(pl.DataFrame({{"x": [1]}}), Path({str(target)!r}))
        """,
        "lake.temporary_written",
    )
    [leftover] = _temporaries(paths.lake)
    assert leftover.parent == target.parent and not target.exists()
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        # 7 % malformed: one row of each kind, one of them another payment's copy under an id.
        "source": TransactionSourceResource(rows_per_day=100, malformed_rate=0.07),
        "alerting": AlertingResource(path=str(tmp_path / "alerts.jsonl")),
    }
    key = str(dg.MultiPartitionKey({"region": "us-east", "day": "2026-01-01"}))
    result = dg.materialize([transactions_ingestion], resources=resources, partition_key=key)
    assert result.success
    assert _temporaries(paths.lake) == []
    metadata = result.asset_materializations_for_node("transactions_ingestion")[0].metadata
    assert metadata["leftover_temporaries_removed"].value == 1
    # The conflicting copies were quarantined, and said so.
    assert "conflicting-ids:us-east:raw_transactions:2026-01-01" in (tmp_path / "alerts.jsonl").read_text()


def test_a_killed_replication_leaves_an_object_temporary_that_the_next_run_removes(tmp_path):
    src, replica = tmp_path / "src", tmp_path / "replica"
    for i in range(3):
        write_parquet_atomic(
            pl.DataFrame({"i": [i]}), src / "lake" / "t" / f"day=2026-01-0{i + 1}" / "data.parquet"
        )
    _killed(
        f"""
        from pathlib import Path
        from meridian.replication import Replica, walk
        Replica(Path({str(replica)!r})).replicate(walk(Path({str(src)!r}), ["lake"]), threads=1)
        """,
        "replication.object_copied:2",
    )
    assert len(_temporaries(replica)) == 1  # before: it stayed in the DR object store
    result = Replica(replica).replicate(walk(src, ["lake"]))
    assert result.temporaries_removed == 1 and _temporaries(replica) == []
    assert result.version == 1 and result.files == 3


def test_only_temporaries_no_live_writer_owns_are_removed(tmp_path):
    mine = temporary_name(tmp_path, "data.parquet")  # this (live) process's
    mine.write_bytes(b"being written")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    gone = tmp_path / mine.name.replace(f"~{os.getpid()}~", f"~{int(dead.stdout)}~")
    gone.write_bytes(b"orphan")
    other_host = tmp_path / ".data.parquet.elsewhere~1~0123456789abcdef0123456789abcdef.tmp"
    unowned_young, unowned_old = tmp_path / ".x.parquet.abc.tmp", tmp_path / ".y.parquet.abc.tmp"
    for path in (other_host, unowned_young, unowned_old):
        path.write_bytes(b"?")
    old = time.time() - ORPHAN_AGE_S - 60
    os.utime(unowned_old, (old, old))
    removed = sweep_temporaries(tmp_path)
    assert sorted(removed) == sorted([gone, unowned_old])
    assert mine.exists() and other_host.exists() and unowned_young.exists()


def test_an_unreadable_lake_file_costs_its_partition_not_the_region(tmp_path, topology):
    """A truncated Parquet file anywhere in the lake failed every later dbt build of the region
    (every model globs the whole table). It is set aside with an ERROR alert naming the
    partition to re-ingest, and the build of the other days goes on."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from assets.transforms import regional_dbt_models

    home = tmp_path / "home"
    alerts = tmp_path / "alerts.jsonl"
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=200),
        "alerting": AlertingResource(path=str(alerts)),
    }
    key = lambda day: str(dg.MultiPartitionKey({"region": "eu-west", "day": day}))  # noqa: E731
    from assets.ingestion import labels_ingestion

    days = ("2026-01-01", "2026-01-02", "2026-01-03")
    assert dg.materialize(
        [transactions_ingestion, labels_ingestion],
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: key(days[0]), ASSET_PARTITION_RANGE_END_TAG: key(days[-1])},
    ).success
    paths = region_paths(topology.region("eu-west"), home)
    (broken,) = (paths.table("raw_transactions") / f"day={days[1]}" / "origin=source").glob("*.parquet")
    broken.write_bytes(broken.read_bytes()[:-50])
    result = dg.materialize([regional_dbt_models], resources=resources, partition_key=key(days[2]))
    assert result.success
    # The partition left the table's newest version; the file is kept for inspection.
    table = paths.lake_table("raw_transactions")
    assert broken.exists() and days[1] not in {p["day"] for p in table.partitions()}
    assert {p["day"] for p in table.partitions()} == {days[0], days[2]}
    text = alerts.read_text()
    assert "unreadable-lake-file:eu-west:raw_transactions:2026-01-02" in text and "re-materialize" in text
