"""dagster-daemon on the production instance (PostgreSQL, the MLflow server, Redis): the run queue
with per-region pools, run monitoring and retries after a killed worker, and a due schedule. As
in the production deployment (platform/deploy/helm), the code location is its own server that the
daemon and the dagster CLI reach over gRPC."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from meridian.paths import REPO_ROOT
from tests.daemon import code_server, failure_of, kill_tree, launch, start_daemon, stop_daemon, wait
from tests.helpers import lake_day, shipped_dbt

pytestmark = pytest.mark.e2e


@pytest.fixture
def workspace(production, tmp_path):
    """The code location as production serves it (`dagster api grpc`, tests.daemon.code_server),
    one per test: whatever a test's runs left running stops with it. Its run workers run dbt as
    shipped: a run worker killed mid-build takes its dbt with it."""
    with code_server(shipped_dbt({**os.environ, **production["env"]}), tmp_path) as workspace:
        yield workspace


def test_the_daemon_runs_the_queue_with_per_region_pools_and_the_sensors_launch_runs(
    production, workspace, tmp_path
):
    """dagster-daemon against the Postgres instance: three single-run backfills queued at once —
    two regions in parallel, the same region one after the other — then the replication sensor
    (not a test calling it: the daemon's own tick) launches a replication run per region, and
    the landing sensor launches the pipeline of a region-day a partner delivered a file for."""
    env = {**os.environ, **production["env"]}
    landed_root = _a_partner_delivers_a_file(production)
    daemon, log = start_daemon(env, tmp_path / "daemon.log", workspace)
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    try:
        launch("regional_pipeline", "eu-west", "2026-01-15", "2026-01-16", env, workspace)
        launch("regional_pipeline", "us-east", "2026-01-01", "2026-01-02", env, workspace)
        launch("regional_pipeline", "eu-west", "2026-01-17", "2026-01-18", env, workspace)
        with dg.DagsterInstance.get() as instance:

            def pipelines():
                records = instance.get_run_records(dg.RunsFilter(job_name="regional_pipeline"))
                mine = [
                    r
                    for r in records
                    if r.dagster_run.tags.get("meridian/region")
                    and ASSET_PARTITION_RANGE_START_TAG in r.dagster_run.tags
                    and "2026-01-14" not in r.dagster_run.tags[ASSET_PARTITION_RANGE_END_TAG]
                ]
                return (
                    mine if len(mine) == 3 and all(r.dagster_run.status in terminal for r in mine) else None
                )

            records = wait(instance, pipelines, "the three queued runs", 420)
            assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}, (
                tmp_path / "daemon.log"
            ).read_text()[-3000:]
            spans = {
                r.dagster_run.run_id: (r.dagster_run.tags["meridian/region"], r.start_time, r.end_time)
                for r in records
            }
            eu = sorted((s, e) for region, s, e in spans.values() if region == "eu-west")
            (us,) = [(s, e) for region, s, e in spans.values() if region == "us-east"]
            assert eu[0][1] <= eu[1][0], f"two eu-west runs overlapped: {eu}"  # the pool held
            assert us[0] < max(e for _, e in eu) and us[1] > min(s for s, _ in eu), (
                f"us-east did not run beside eu-west: {us} vs {eu}"
            )

            # The replication sensor ticks once a minute. Its last tick is moved a minute back, as
            # if that minute had passed: the daemon's next pass evaluates it (still the daemon's
            # own tick launching the runs) instead of the test idling until the minute is up.
            sensor = next(s for s in instance.all_instigator_state() if s.name == "replication_sensor")
            minute_ago = time.time() - 61
            instance.update_instigator_state(
                sensor.with_data(
                    sensor.instigator_data._replace(
                        last_tick_timestamp=minute_ago, last_tick_start_timestamp=minute_ago
                    )
                )
            )

            def replications():
                records = instance.get_run_records(dg.RunsFilter(job_name="regional_replication"))
                done = {
                    r.dagster_run.tags.get("dagster/partition")
                    for r in records
                    if r.dagster_run.status in terminal
                }
                return records if {"eu-west", "us-east"} <= done else None

            records = wait(instance, replications, "the replication sensor's runs", 240)
            assert all(r.dagster_run.tags.get("dagster/sensor_name") == "replication_sensor" for r in records)
            # A later tick may already have launched the next replication of a region (files
            # landed since): a run still starting is not a result. Every finished one succeeded.
            finished = [r for r in records if r.dagster_run.status in terminal]
            assert {r.dagster_run.status for r in finished} == {dg.DagsterRunStatus.SUCCESS}
            ticks = instance.get_ticks(
                next(
                    s for s in instance.all_instigator_state() if s.name == "region_health_sensor"
                ).instigator_origin_id,
                next(
                    s for s in instance.all_instigator_state() if s.name == "region_health_sensor"
                ).selector_id,
            )
            assert ticks, "the region health sensor never ticked"

            # The partner's file delivered before the daemon started: the daemon's landing sensor
            # launched its region-day's pipeline, and the lake's day holds the partner's rows.
            _the_delivered_file_reached_the_lake(instance, landed_root, terminal)
    finally:
        stop_daemon(daemon, log)


LANDED_DAY = "2026-01-03"


def _a_partner_delivers_a_file(production) -> Path:
    """A partner's CSV for ap-southeast, delivered (hidden name, then a rename) before the daemon
    starts: its landing sensor's first tick launches that region-day's pipeline, beside the
    other regions' runs (its own region's pool)."""
    import polars as pl

    from meridian import landing
    from meridian.generator import GeneratorConfig, generate_transactions
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    region = load_topology().region("ap-southeast")
    root = region_paths(region, Path(production["env"]["MERIDIAN_HOME"])).root
    config = GeneratorConfig(rows_per_day=15, seed=99)
    rows = generate_transactions(config, region, date.fromisoformat(LANDED_DAY)).rows
    rows = rows.with_columns(pl.col("transaction_id") + "-partner")
    target = landing.landing_root(root) / "transactions" / LANDED_DAY / "partner-0001.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    hidden = target.with_name(".partner-0001.csv.part")
    hidden.write_text(rows.write_csv())
    hidden.rename(target)
    return root


def _the_delivered_file_reached_the_lake(instance, root: Path, terminal) -> None:
    import polars as pl

    from meridian import landing

    def landed():
        runs = [
            r
            for r in instance.get_run_records(dg.RunsFilter(tags={"meridian/trigger": "landing"}))
            if r.dagster_run.status in terminal
        ]
        return runs or None

    (run,) = wait(instance, landed, "the landing sensor's run", 180)
    assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert run.dagster_run.tags["dagster/sensor_name"] == "landing_sensor"
    assert run.dagster_run.tags["dagster/partition/day"] == LANDED_DAY
    lake = lake_day(root / "lake", "raw_transactions", LANDED_DAY)
    assert lake.filter(pl.col("transaction_id").str.ends_with("-partner")).height == 15
    assert lake.height > 15  # the generator's delivery for the day, beside the partner's
    assert landing.pending(root) == ([], [])


def test_a_killed_run_worker_fails_its_run_and_the_retry_resumes_from_the_failed_step(
    production, workspace, tmp_path
):
    import yaml

    # The production instance, with the monitor polling every 2 s instead of 30 s.
    config = yaml.safe_load((REPO_ROOT / "platform" / "dagster.production.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 2
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **production["env"], "DAGSTER_HOME": str(dagster_home)}
    daemon, log = start_daemon(env, tmp_path / "daemon.log", workspace)
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    try:
        launch("regional_pipeline", "ap-southeast", "2026-01-01", "2026-01-02", env, workspace)
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:

            def dbt_started():
                runs = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="regional_pipeline"))
                    if r.tags.get("meridian/region") == "ap-southeast"
                    and "dagster/parent_run_id" not in r.tags
                ]
                if not runs:
                    return None
                if runs[0].status in terminal:
                    raise AssertionError(f"the run ended before dbt: {failure_of(instance, runs[0].run_id)}")
                steps = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
                return runs[0] if any(e.step_key == "regional_dbt_models" for e in steps) else None

            run = wait(instance, dbt_started, "the dbt step to start", 240)
            (start,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
            kill_tree(start.dagster_event.pid)
            failed = wait(
                instance,
                lambda: (r := instance.get_run_by_id(run.run_id)).status in terminal and r,
                "run monitoring to mark the run",
                120,
            )
            assert failed.status == dg.DagsterRunStatus.FAILURE
            # Whoever noticed first (the code server that spawned the worker, or the run monitor
            # asking MonitoredRunLauncher) recorded why.
            engine = " ".join(e.message for e in instance.all_logs(run.run_id) if e.message)
            assert "is gone (killed or crashed)" in engine or "marked as failed from outside" in engine

            def retried():
                children = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="regional_pipeline"))
                    if r.tags.get("dagster/parent_run_id") == run.run_id
                ]
                return children[0] if children and children[0].status in terminal else None

            retry = wait(instance, retried, "the automatic retry", 300)
            assert retry.status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
            retried_steps = {
                e.step_key for e in instance.all_logs(retry.run_id, of_type=dg.DagsterEventType.STEP_START)
            }
            done_before = {
                e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            }
            assert {"transactions_ingestion", "labels_ingestion"} <= done_before
            assert not retried_steps & done_before  # resumed from the failed step, nothing redone
            assert "regional_dbt_models" in retried_steps
    finally:
        stop_daemon(daemon, log)
    # No partial output: every file a reader can see is whole.
    import polars as pl

    lake = production["home"] / "regions" / "ap-southeast" / "lake"
    for path in lake.rglob("*.parquet"):
        pl.read_parquet(path)
    assert not [
        p for p in lake.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix == ".tmp"
    ]


def test_the_daemon_fires_a_due_schedule_and_launches_its_run(production, workspace, tmp_path):
    """A schedule's tick is due (its state says it last ran 26 hours ago, as after a day of
    downtime): the daemon's scheduler fires it and the run it launches succeeds."""
    from dagster._core.scheduler.instigation import ScheduleInstigatorData

    env = {**os.environ, **production["env"]}
    name = "daily_governance_schedule"
    with dg.DagsterInstance.get() as instance:

        def state():
            return next((s for s in instance.all_instigator_state() if s.name == name), None)

        if state() is None:  # the daemon records a schedule that runs by default on its first pass
            daemon, log = start_daemon(env, tmp_path / "daemon-first.log", workspace)
            try:
                wait(instance, state, "the schedule's state", 120)
            finally:
                stop_daemon(daemon, log)
        current = state()
        day_ago = time.time() - 26 * 3600
        data = current.instigator_data
        instance.update_instigator_state(
            current.with_data(
                ScheduleInstigatorData(
                    data.cron_schedule, start_timestamp=day_ago, last_iteration_timestamp=day_ago
                )
            )
        )
        instance.purge_ticks(current.instigator_origin_id, current.selector_id, before=time.time() + 1)
        daemon, log = start_daemon(env, tmp_path / "daemon.log", workspace)
        terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        try:

            def fired():
                runs = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="global_governance"))
                    if r.tags.get("dagster/schedule_name") == name
                ]
                return runs[0] if runs and runs[0].status in terminal else None

            run = wait(instance, fired, "the scheduled run", 300)
        finally:
            stop_daemon(daemon, log)
        assert run.status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
        audit = instance.get_latest_materialization_event(dg.AssetKey("residency_audit"))
        assert audit.run_id == run.run_id and audit.asset_materialization.metadata["passed"].value is True
