"""The wired Definitions: graph shape, partitions, schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from assets.definitions_file import load_definitions_module
from tests.helpers import REGIONAL_ASSETS


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions_module().defs


ML_ASSETS = ("training_set", "fraud_model_hyperparameters", "fraud_model", "fraud_model_promotion")
# Per region: the deployment config and the serving stream's micro-batches (they follow the
# service's clock, not the lake's days).
SERVING_ASSETS = ("deployment_config", "served_transactions", "scoring_decisions")
# Per region over all of its days: performance once labels mature.
MONITORING_ASSETS = ("model_performance", "deployment_analysis")
# Per region: a replica of each asset class in the region's DR pair.
REPLICA_ASSETS = tuple(
    f"{c}_replica"
    for c in ("raw_lake", "features", "predictions", "online_store", "model_registry", "deployment_config")
)
# Global: one view over every region, aggregates only.
GLOBAL_ASSETS = (
    "platform_health",
    "replication_status",
    "global_merchant_risk",
    "residency_audit",
    "governance_catalog",
    "cost_report",
)


def test_every_regional_asset_is_partitioned_by_active_region(defs, topology):
    """Region × day for data; by region alone for what is trained on a region's whole history."""
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.materializable_asset_keys}
    assert (
        set(REGIONAL_ASSETS)
        | set(ML_ASSETS)
        | set(SERVING_ASSETS)
        | set(MONITORING_ASSETS)
        | set(REPLICA_ASSETS)
        | set(GLOBAL_ASSETS)
        | {"fraud_predictions", "feature_drift"}
        <= keys
    )
    for key in graph.materializable_asset_keys:
        partitions = graph.get(key).partitions_def
        if key.to_user_string() in GLOBAL_ASSETS:
            assert partitions is None, key
            continue
        if key.to_user_string() in ML_ASSETS + SERVING_ASSETS + MONITORING_ASSETS + REPLICA_ASSETS:
            assert isinstance(partitions, dg.StaticPartitionsDefinition), key
            assert partitions.get_partition_keys() == topology.active_region_names
            continue
        assert isinstance(partitions, dg.MultiPartitionsDefinition), key
        regions = partitions.get_partitions_def_for_dimension("region").get_partition_keys()
        assert regions == topology.active_region_names


def test_lineage_runs_from_features_through_training_set_and_model_to_predictions(defs):
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert {"labelled_events", "customer_spend_view", "merchant_risk_view"} <= parents("training_set")
    assert {"training_set", "fraud_model_hyperparameters"} <= parents("fraud_model")
    assert parents("fraud_model_promotion") == {"fraud_model"}
    assert {"fraud_model_promotion", "customer_spend_view", "merchant_risk_view"} <= parents(
        "fraud_predictions"
    )
    # A region's training set reads every day of its region (and only its region); predictions
    # of a region-day use that region's promoted model.
    for child, parent in (
        ("training_set", "customer_spend_view"),
        ("training_set", "labelled_events"),
        ("fraud_predictions", "fraud_model_promotion"),
    ):
        mapping = defs.resolve_assets_def(child).get_partition_mapping(dg.AssetKey(parent))
        assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping), (child, parent)
        assert mapping.partition_dimension_name == "region"


def test_lineage_runs_from_ingestion_through_staging_to_features(defs):
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert {"raw_transactions", "served_transactions"} <= parents("stg_transactions")
    assert parents("deployment_config") == {"fraud_model_promotion"}
    assert "raw_labels" in parents("stg_labels")
    assert {"stg_transactions", "stg_labels"} <= parents("merchant_risk_features")
    assert {"stg_transactions", "stg_labels"} <= parents("labelled_events")
    assert graph.get(dg.AssetKey("customer_spend_features")).group_name == "features"


def test_the_nightly_schedule_requests_yesterday_for_every_active_region(defs, topology):
    schedule = defs.resolve_schedule_def("regional_pipeline_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 2, 2, tzinfo=UTC))
    requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == sorted(
        str(dg.MultiPartitionKey({"region": r, "day": "2026-03-01"})) for r in topology.active_region_names
    )


def test_an_unknown_profile_is_refused_by_name():
    module = load_definitions_module()
    with pytest.raises(ValueError, match="MERIDIAN_PROFILE='staging' is not a known profile"):
        module.build_resources("staging")


def test_the_stream_sensor_requests_a_microbatch_only_for_regions_whose_log_grew(defs, meridian_home):
    from meridian.paths import region_paths
    from meridian.stream_log import StreamLogWriter, stream_dir
    from meridian.topology import load_topology
    from resources.lake import RegionalLakeResource

    sensor = defs.resolve_sensor_def("serving_stream_sensor")
    resources = {**defs.resources, "lake": RegionalLakeResource(home=str(meridian_home))}
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        assert list(sensor(context) or []) == []  # no log anywhere
        region = load_topology().region("eu-west")
        writer = StreamLogWriter(stream_dir(region_paths(region, meridian_home).root), flush_seconds=0.01)
        writer.append({"request_id": "r-1"})
        writer.close()
        requests = list(sensor(dg.build_sensor_context(instance=instance, resources=resources)))
        assert [r.partition_key for r in requests] == ["eu-west"]
        assert requests[0].run_key.startswith("eu-west-")


def test_the_daily_assets_carry_a_freshness_policy(defs):
    graph = defs.resolve_asset_graph()
    fresh = {k.to_user_string() for k in graph.materializable_asset_keys if graph.get(k).freshness_policy}
    assert {
        "raw_transactions",
        "customer_spend_features",
        "online_features",
        "fraud_predictions",
        "feature_drift",
    } <= fresh
    assert not fresh & {"fraud_model", "training_set", "platform_health", "deployment_config"}


def test_monitoring_views_refresh_themselves(defs):
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("platform_health")).automation_condition is not None
    assert graph.get(dg.AssetKey("model_performance")).automation_condition is not None
    sensors = {s.name for s in defs.sensors}
    assert {"predictions_drift_sensor", "drift_retraining_sensor", "deployment_analysis_sensor"} <= sensors


def test_each_replica_asset_follows_what_it_copies(defs):
    graph = defs.resolve_asset_graph()
    parents = lambda name: {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}  # noqa: E731
    assert {"raw_transactions", "raw_labels", "scoring_decisions"} <= parents("raw_lake_replica")
    assert parents("online_store_replica") == {"online_features"}
    assert parents("model_registry_replica") == {"fraud_model", "fraud_model_promotion"}
    assert parents("deployment_config_replica") == {"deployment_config"}
    assert "fraud_predictions" in parents("predictions_replica")
    assert {f"{c}_replica" for c in ("raw_lake", "features")} <= parents("residency_audit")
    assert graph.get(dg.AssetKey("raw_lake_replica")).tags["meridian/replication_class"] == "raw_lake"


def test_the_replication_sensor_requests_only_regions_with_unreplicated_files(defs, meridian_home):
    import polars as pl

    from meridian import dr
    from meridian.paths import region_paths
    from meridian.topology import load_topology
    from resources.lake import RegionalLakeResource

    topology = load_topology()
    sensor = defs.resolve_sensor_def("replication_sensor")
    resources = {**defs.resources, "lake": RegionalLakeResource(home=str(meridian_home))}
    paths = region_paths(topology.region("eu-west"), meridian_home)
    paths.lake_table("raw_labels").replace(pl.DataFrame({"transaction_id": ["t1"]}), day="2026-01-01")
    with dg.instance_for_test() as instance:
        requests = list(sensor(dg.build_sensor_context(instance=instance, resources=resources)) or [])
        assert [r.partition_key for r in requests] == ["eu-west"]
        for cls in ("raw_lake", "features", "predictions"):
            dr.replicate_class(topology, meridian_home, "eu-west", cls)
        assert list(sensor(dg.build_sensor_context(instance=instance, resources=resources)) or []) == []


def test_the_dagster_cli_finds_the_definitions_from_the_repository_root_without_arguments(tmp_path):
    """Regression: pyproject's `[tool.dagster] module_name = "platform.definitions"` took precedence
    over workspace.yaml and cannot be imported (platform/ is not a package, on purpose), so a plain
    `dagster dev` or `dagster definitions validate` in the checkout failed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from meridian.paths import REPO_ROOT

    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    env = {**os.environ, "MERIDIAN_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Validation successful for code location meridian" in run.stdout + run.stderr
