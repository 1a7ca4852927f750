"""The embedded default's event log (instance/event_log.py): Dagster's SQLite storage with its
engines kept between events. It must store and answer exactly as Dagster's does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

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


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


@dg.asset_check(asset=ranged)
def ranged_is_fine() -> dg.AssetCheckResult:
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


def _ranged_run(dagster_home: Path, batch_size: str, monkeypatch) -> tuple[list, dict, list]:
    """A run of `ranged` and its check over every day as one step (as `meridian run` launches a
    region's days): the event types of the run, each day's latest materialization, the check's
    planned executions, read back through a fresh instance."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    install_instance_config(dagster_home, "local")
    days = DAYS.get_partition_keys()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = dg.materialize(
            [ranged, ranged_is_fine],
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]},
        )
        assert run.success
    with dg.DagsterInstance.from_config(str(dagster_home)) as reader:
        types = [e.dagster_event_type for e in reader.all_logs(run.run_id)]
        latest = reader.get_latest_materialization_event(ranged.key)
        assets = {
            "latest": latest.dagster_event.partition if latest and latest.dagster_event else None,
            "partitions": sorted(reader.get_materialized_partitions(ranged.key)),
            "planned": len(
                reader.fetch_planned_materializations(
                    dg.AssetRecordsFilter(asset_key=ranged.key), limit=100
                ).records
            ),
        }
        checks = sorted(
            (r.status.value, r.run_id == run.run_id)
            for r in reader.event_log_storage.get_asset_check_execution_history(
                ranged_is_fine.check_key, limit=50
            )
        )
    return types, assets, checks


def test_a_ranged_runs_event_batches_are_stored_as_dagster_stores_them_event_by_event(tmp_path, monkeypatch):
    batches: list[int] = []
    original = PooledSqliteEventLogStorage.store_event_batch

    def counted(self, events):
        batches.append(len(events))
        return original(self, events)

    monkeypatch.setattr(PooledSqliteEventLogStorage, "store_event_batch", counted)
    one_by_one = _ranged_run(tmp_path / "one-by-one", "0", monkeypatch)
    assert batches == []
    batched = _ranged_run(tmp_path / "batched", "1000", monkeypatch)
    # The planned events and the step's ten materializations each went as one batch ...
    assert len(DAYS.get_partition_keys()) in batches and max(batches) > len(DAYS.get_partition_keys())
    # ... and the stored result is the same, event for event.
    assert batched == one_by_one
    types, assets, checks = batched
    days = DAYS.get_partition_keys()
    assert types.count(dg.DagsterEventType.ASSET_MATERIALIZATION) == len(days)
    assert assets == {"latest": days[-1], "partitions": days, "planned": len(days)}
    assert ("SUCCEEDED", True) in checks and all(mine for _, mine in checks)


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
