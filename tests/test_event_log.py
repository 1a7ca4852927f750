"""The embedded default's event log (instance/event_log.py): Dagster's SQLite storage with its
engines kept between events. It must store and answer exactly as Dagster's does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from instance.event_log import PooledSqliteEventLogStorage
from meridian.paths import REPO_ROOT
from meridian.profiles import install_instance_config

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")


@dg.asset(partitions_def=DAYS)
def daily(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"day": context.partition_key})


@dg.asset_check(asset=daily)
def daily_is_fine() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_the_shipped_instance_stores_events_where_dagsters_storage_would(tmp_path: Path):
    dagster_home = tmp_path / "dagster"
    config = install_instance_config(dagster_home, "local").read_text()
    assert "{instance_dir}" not in config and f"{dagster_home.resolve().as_posix()}/history/runs" in config
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        run_ids = [
            dg.materialize([daily, daily_is_fine], instance=instance, partition_key=day).run_id
            for day in DAYS.get_partition_keys()[:4]
        ]
        assert instance.get_materialized_partitions(daily.key) == set(DAYS.get_partition_keys()[:4])
    # Same files as Dagster's default: one shard per run and the index, under history/runs.
    shards = {p.stem for p in (dagster_home / "history" / "runs").glob("*.db")}
    assert shards == {*run_ids, "index"}
    # Another process (the webserver, the daemon) reads them with Dagster's own storage.
    reader = (
        "import dagster as dg, sys\n"
        "from dagster._core.storage.event_log import SqliteEventLogStorage\n"
        "storage = SqliteEventLogStorage(sys.argv[1])\n"
        "records = storage.fetch_materializations(dg.AssetKey('daily'), limit=100).records\n"
        "print(sorted(r.partition_key for r in records))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader, str(dagster_home / "history" / "runs")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == str(sorted(DAYS.get_partition_keys()[:4]))


def test_two_instances_on_one_home_see_each_others_events_and_a_wipe_leaves_no_stale_shard(tmp_path: Path):
    dagster_home = tmp_path / "dagster"
    install_instance_config(dagster_home, "local")
    with (
        dg.DagsterInstance.from_config(str(dagster_home)) as writer,
        dg.DagsterInstance.from_config(str(dagster_home)) as reader,
    ):
        first = dg.materialize([daily], instance=writer, partition_key="2026-01-01")
        assert reader.get_materialized_partitions(daily.key) == {"2026-01-01"}
        dg.materialize([daily], instance=reader, partition_key="2026-01-02")
        assert writer.get_materialized_partitions(daily.key) == {"2026-01-01", "2026-01-02"}
        assert [e.dagster_event_type for e in writer.all_logs(first.run_id)][
            -1
        ] == dg.DagsterEventType.RUN_SUCCESS
        writer.event_log_storage.wipe()
        assert not list((dagster_home / "history" / "runs").glob("*-*.db"))
        assert reader.get_materialized_partitions(daily.key) == set()
        # After the wipe its engines were dropped: new runs write new shard files.
        again = dg.materialize([daily], instance=writer, partition_key="2026-01-03")
        assert (dagster_home / "history" / "runs" / f"{again.run_id}.db").exists()
        assert reader.get_materialized_partitions(daily.key) == {"2026-01-03"}


def test_an_uninstalled_copy_of_the_instance_configuration_is_refused_with_the_fix(tmp_path: Path):
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "platform" / "dagster.yaml").read_text())
    with pytest.raises(ValueError, match="install_instance_config"):
        dg.DagsterInstance.from_config(str(dagster_home))
