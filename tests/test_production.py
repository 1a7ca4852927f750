"""The production profile against real servers on loopback: the Dagster instance on PostgreSQL
(dagster-postgres), the MLflow tracking server with a PostgreSQL backend store, Redis as the
online store, and dagster-daemon launching what the sensors and the run queue decide."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from meridian.paths import REPO_ROOT
from meridian.profiles import install_instance_config
from tests.helpers import trainable_days
from tests.servers import MlflowServer, Postgres

pytestmark = pytest.mark.e2e
REGION = "eu-west"
# The views' warm-up, 4 days of matured, full-window labels, and their maturity window.
DAYS = trainable_days(4)


@pytest.fixture(scope="module")
def production(tmp_path_factory, redis_url):
    """Postgres (two databases), the MLflow server on one of them, the production environment."""
    pg = Postgres().init()
    pg.start()
    root = tmp_path_factory.mktemp("production")
    (root / "artifacts").mkdir()
    server = None
    try:
        pg.create_database("dagster")
        dagster_db = pg.url("dagster", "psycopg2")
        pg.create_database("mlflow")
        server = MlflowServer(pg.url("mlflow", "psycopg2"), root / "artifacts")
        home = root / "home"
        env = {
            "MERIDIAN_PROFILE": "production",
            "MERIDIAN_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "DAGSTER_PG_URL": dagster_db,
            "MERIDIAN_MLFLOW_TRACKING_URI": server.url,
            "MERIDIAN_REDIS_URL": redis_url,
        }
        install_instance_config(home / "dagster", "production")
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield {"pg": pg, "mlflow": server, "home": home, "env": env}
    finally:
        if server is not None:
            server.stop()
        pg.close()


def _definitions():
    from assets.definitions_file import load_definitions_module

    return load_definitions_module()


def test_the_production_profile_names_what_it_is_missing(monkeypatch):
    module = _definitions()
    for name in module.PRODUCTION_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="MERIDIAN_PROFILE=production needs: MERIDIAN_MLFLOW_TRACKING_URI"):
        module.build_resources("production")
    with pytest.raises(ValueError, match="'staging' is not a known profile"):
        module.build_resources("staging")


def test_a_slice_of_the_graph_runs_on_postgres_and_the_mlflow_server(production):
    """Pipeline (online store on Redis), training and promotion in the production profile; the run
    history read back through the instance API, the model through the MLflow server."""
    module = _definitions()
    resources = module.build_resources("production")
    assert resources["online_store"].backend == "redis"
    assert resources["mlflow_tracking"].uri() == production["mlflow"].url
    defs = module.defs
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        key = lambda day: str(dg.MultiPartitionKey({"region": REGION, "day": day}))  # noqa: E731
        quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
        pipeline = defs.resolve_job_def("regional_pipeline").execute_in_process(
            instance=instance,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: key(DAYS[0]),
                ASSET_PARTITION_RANGE_END_TAG: key(DAYS[-1]),
            },
            run_config={"resources": {"source": {"config": {"rows_per_day": 600}}}, **quiet},
        )
        assert pipeline.success
        training = defs.resolve_job_def("ml_training").execute_in_process(
            instance=instance,
            partition_key=REGION,
            run_config={
                "ops": {"fraud_model_hyperparameters": {"config": {"n_trials": 2, "max_rounds": 60}}},
                **quiet,
            },
        )
        assert training.success
    # Read back through a fresh instance: everything is in PostgreSQL.
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["ml_training", "regional_pipeline"]
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert len(instance.get_materialized_partitions(dg.AssetKey("raw_transactions"))) == len(DAYS)
        record = instance.get_latest_materialization_event(dg.AssetKey("fraud_model_promotion"))
        assert record.asset_materialization.metadata["decision"].value == "promoted"
        assert record.asset_materialization.metadata["dr_region"].value == "eu-central"
        pipeline_run = next(r for r in runs if r.job_name == "regional_pipeline")
        checks = instance.all_logs(pipeline_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        assert checks and all(e.dagster_event.event_specific_data.passed for e in checks)
    # The registry lives on the server; the DR replica got the model's files through it.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=production["mlflow"].url)
    champion = client.get_model_version_by_alias("fraud-eu-west", "champion")
    assert champion.version == "1"
    # Artifacts go through the server (served artifacts), not a path on this machine.
    assert client.get_model_version_download_uri("fraud-eu-west", "1").startswith("mlflow-artifacts:")
    booster = mlflow.lightgbm.load_model("models:/fraud-eu-west@champion")
    assert booster.num_trees() > 0
    from meridian import dr
    from meridian.topology import load_topology

    replica = dr.replica(load_topology(), production["home"], REGION, "model_registry")
    assert any(rel.endswith(".lgb") for rel in replica.manifest()["files"])
    # The online store of the production profile is Redis.
    store = resources["online_store"].open(resources["lake"].paths(load_topology(), REGION))
    assert store.count("customer_spend") > 100
    store.close()


def _launch(job: str, region: str, first: str, last: str, env: dict[str, str]) -> None:
    key = lambda day: str(dg.MultiPartitionKey({"region": region, "day": day}))  # noqa: E731
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: key(first),
        ASSET_PARTITION_RANGE_END_TAG: key(last),
        "meridian/region": region,
    }
    config = {"resources": {"source": {"config": {"rows_per_day": 600}}}}  # as the slice test: one generator
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "launch",
            "-w",
            "workspace.yaml",
            "-j",
            job,
            "--tags",
            json.dumps(tags),
            "--config-json",
            json.dumps(config),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _wait(instance, predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_daemon(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, object]:
    log = open(log_path, "w")  # noqa: SIM115 - closed by _stop_daemon
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return daemon, log


def _stop_daemon(daemon: subprocess.Popen, log) -> None:
    os.killpg(daemon.pid, 15)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, 9)
    log.close()


def test_the_daemon_runs_the_queue_with_per_region_pools_and_the_sensors_launch_runs(production, tmp_path):
    """dagster-daemon against the Postgres instance: three single-run backfills queued at once —
    two regions in parallel, the same region one after the other — then the replication sensor
    (not a test calling it: the daemon's own tick) launches a replication run per region."""
    env = {**os.environ, **production["env"]}
    daemon, log = _start_daemon(env, tmp_path / "daemon.log")
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    try:
        _launch("regional_pipeline", "eu-west", "2026-01-15", "2026-01-16", env)
        _launch("regional_pipeline", "us-east", "2026-01-01", "2026-01-02", env)
        _launch("regional_pipeline", "eu-west", "2026-01-17", "2026-01-18", env)
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

            records = _wait(instance, pipelines, "the three queued runs", 420)
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

            def replications():
                records = instance.get_run_records(dg.RunsFilter(job_name="regional_replication"))
                done = {
                    r.dagster_run.tags.get("dagster/partition")
                    for r in records
                    if r.dagster_run.status in terminal
                }
                return records if {"eu-west", "us-east"} <= done else None

            records = _wait(instance, replications, "the replication sensor's runs", 240)
            assert all(r.dagster_run.tags.get("dagster/sensor_name") == "replication_sensor" for r in records)
            assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
            ticks = instance.get_ticks(
                next(
                    s for s in instance.all_instigator_state() if s.name == "region_health_sensor"
                ).instigator_origin_id,
                next(
                    s for s in instance.all_instigator_state() if s.name == "region_health_sensor"
                ).selector_id,
            )
            assert ticks, "the region health sensor never ticked"
    finally:
        _stop_daemon(daemon, log)


def _kill_tree(pid: int) -> None:
    """A crashed pod: the worker and everything it started (dbt) die at once."""
    import psutil

    root = psutil.Process(pid)
    for process in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def test_a_killed_run_worker_fails_its_run_and_the_retry_resumes_from_the_failed_step(production, tmp_path):
    import yaml

    # The production instance, with the monitor polling every 2 s instead of 30 s.
    config = yaml.safe_load((REPO_ROOT / "platform" / "dagster.production.yaml").read_text())
    config["run_monitoring"]["poll_interval_seconds"] = 2
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **production["env"], "DAGSTER_HOME": str(dagster_home)}
    daemon, log = _start_daemon(env, tmp_path / "daemon.log")
    terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    try:
        _launch("regional_pipeline", "ap-southeast", "2026-01-01", "2026-01-02", env)
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
                steps = instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START)
                return runs[0] if any(e.step_key == "regional_dbt_models" for e in steps) else None

            run = _wait(instance, dbt_started, "the dbt step to start", 240)
            (start,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
            _kill_tree(start.dagster_event.pid)
            failed = _wait(
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

            retry = _wait(instance, retried, "the automatic retry", 300)
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
        _stop_daemon(daemon, log)
    # No partial output: every file a reader can see is whole.
    import polars as pl

    lake = production["home"] / "regions" / "ap-southeast" / "lake"
    for path in lake.rglob("*.parquet"):
        pl.read_parquet(path)
    assert not [
        p for p in lake.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix == ".tmp"
    ]


def test_a_postgres_restart_during_a_run_leaves_the_instance_consistent(production):
    """PostgreSQL restarts while a run writes its events: the run completes (dagster-postgres
    reconnects) or fails cleanly, and the instance reads back whole afterwards."""
    import threading

    defs = _definitions().defs
    key = lambda day: str(dg.MultiPartitionKey({"region": "us-east", "day": day}))  # noqa: E731
    outcome: dict[str, object] = {}

    def run() -> None:
        with dg.DagsterInstance.get() as instance:
            try:
                result = defs.resolve_job_def("regional_pipeline").execute_in_process(
                    instance=instance,
                    tags={
                        ASSET_PARTITION_RANGE_START_TAG: key("2026-01-05"),
                        ASSET_PARTITION_RANGE_END_TAG: key("2026-01-06"),
                        "meridian/region": "us-east",
                    },
                    run_config={"resources": {"source": {"config": {"rows_per_day": 600}}}},
                    raise_on_error=False,
                )
                outcome["run_id"], outcome["success"] = result.run_id, result.success
            except Exception as error:
                outcome["error"] = error

    worker = threading.Thread(target=run)
    with dg.DagsterInstance.get() as instance:
        before = {r.run_id for r in instance.get_runs()}
        worker.start()

        def started():
            new = [r for r in instance.get_runs() if r.run_id not in before]
            if not new:
                return None
            steps = instance.all_logs(new[0].run_id, of_type=dg.DagsterEventType.STEP_START)
            return new[0] if steps else None

        run_record = _wait(instance, started, "the run's first step", 120)
    production["pg"].restart()
    worker.join(timeout=600)
    assert not worker.is_alive()
    with dg.DagsterInstance.get() as instance:
        after = instance.get_run_by_id(run_record.run_id)
        assert after.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), after.status
        events = instance.all_logs(after.run_id)
        assert events[0].dagster_event.event_type == dg.DagsterEventType.RUN_START or any(
            e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_START for e in events
        )
        final = [
            e
            for e in events
            if (e.dagster_event and e.dagster_event.is_run_failure)
            or (e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS)
        ]
        assert len(final) == 1  # exactly one terminal event: no half-recorded run
        if after.status == dg.DagsterRunStatus.SUCCESS:
            parts = instance.get_materialized_partitions(dg.AssetKey("raw_transactions"))
            assert {key("2026-01-05"), key("2026-01-06")} <= parts
        # The instance takes new runs at once.
        assert (
            defs.resolve_job_def("regional_pipeline")
            .execute_in_process(
                instance=instance,
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: key("2026-01-07"),
                    ASSET_PARTITION_RANGE_END_TAG: key("2026-01-07"),
                },
                run_config={"resources": {"source": {"config": {"rows_per_day": 600}}}},
            )
            .success
        )
    production["restart_outcome"] = outcome


def test_the_daemon_fires_a_due_schedule_and_launches_its_run(production, tmp_path):
    """A schedule's tick is due (its state says it last ran 26 hours ago, as after a day of
    downtime): the daemon's scheduler fires it and the run it launches succeeds."""
    from dagster._core.scheduler.instigation import ScheduleInstigatorData

    env = {**os.environ, **production["env"]}
    name = "daily_governance_schedule"
    with dg.DagsterInstance.get() as instance:

        def state():
            return next((s for s in instance.all_instigator_state() if s.name == name), None)

        if state() is None:  # the daemon records a schedule that runs by default on its first pass
            daemon, log = _start_daemon(env, tmp_path / "daemon-first.log")
            try:
                _wait(instance, state, "the schedule's state", 120)
            finally:
                _stop_daemon(daemon, log)
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
        daemon, log = _start_daemon(env, tmp_path / "daemon.log")
        terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        try:

            def fired():
                runs = [
                    r
                    for r in instance.get_runs(dg.RunsFilter(job_name="global_governance"))
                    if r.tags.get("dagster/schedule_name") == name
                ]
                return runs[0] if runs and runs[0].status in terminal else None

            run = _wait(instance, fired, "the scheduled run", 300)
        finally:
            _stop_daemon(daemon, log)
        assert run.status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
        audit = instance.get_latest_materialization_event(dg.AssetKey("residency_audit"))
        assert audit.run_id == run.run_id and audit.asset_materialization.metadata["passed"].value is True
