"""The production profile against real servers on loopback: the Dagster instance on PostgreSQL
(dagster-postgres), the MLflow tracking server with a PostgreSQL backend store, Redis as the
online store, and dagster-daemon launching what the sensors and the run queue decide."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tests.daemon import wait
from tests.helpers import trainable_days
from tests.object_stores import EU_ARTIFACT_BUCKET

pytestmark = pytest.mark.e2e
REGION = "eu-west"
# The views' warm-up, 4 days of matured, full-window labels, and their maturity window.
DAYS = trainable_days(4)


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
    # The model's files are in the eu zone's artifact bucket, written with eu-west's own
    # credentials on its endpoint, and nowhere else: not in the tracking server's artifact store.
    uri = client.get_model_version_download_uri("fraud-eu-west", "1")
    assert uri.startswith(f"s3://{EU_ARTIFACT_BUCKET}/experiments/eu-west/"), uri
    store = production["eu_store"]
    keys = [
        o["Key"]
        for page in store.client().get_paginator("list_objects_v2").paginate(Bucket=EU_ARTIFACT_BUCKET)
        for o in page.get("Contents", [])
    ]
    assert all(k.startswith("experiments/eu-west/") for k in keys)
    assert any(k.endswith("MLmodel") for k in keys) and any(k.endswith(".lgb") for k in keys), keys
    served = production["mlflow"].artifacts
    assert not [p for p in served.rglob("*") if p.is_file()], "a model file went to the tracking server"
    # Another credential is refused by the bucket's endpoint: the files are eu-west's alone.
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ClientError):
        store.client("AKIAOTHERZONE0000000", "not-eu-west").list_objects_v2(Bucket=EU_ARTIFACT_BUCKET)
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

        run_record = wait(instance, started, "the run's first step", 120)
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
