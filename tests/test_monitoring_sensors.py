"""The multi-asset sensors on many partitions at once, as `dagster dev` meets them after the
main job (3 regions x 12 scored days): every record is consumed, none is asked for twice."""

from __future__ import annotations

import dagster as dg

from assets.definitions_file import load_definitions_module
from assets.drift import feature_drift
from assets.inference import fraud_predictions
from assets.monitoring_sensors import drift_retraining_sensor, predictions_drift_sensor

REGIONS = ("eu-west", "us-east", "ap-southeast")
DAYS = [f"2026-02-{d:02d}" for d in range(1, 13)]


def _partitions() -> list[str]:
    return [str(dg.MultiPartitionKey({"region": r, "day": d})) for r in REGIONS for d in DAYS]


def test_the_sensors_take_many_partitions_materializations_in_one_tick_and_each_once():
    defs = load_definitions_module().defs
    resources = load_definitions_module().build_resources("local")
    with dg.instance_for_test() as instance:
        for partition in _partitions():  # 36 region-days scored
            instance.report_runless_asset_event(
                dg.AssetMaterialization(fraud_predictions.key, partition=partition)
            )

        def tick(sensor, key, cursor=None):
            context = dg.build_multi_asset_sensor_context(
                monitored_assets=[key],
                instance=instance,
                definitions=defs,
                resources=resources,
                cursor=cursor,
            )
            return sensor.evaluate_tick(context)

        first = tick(predictions_drift_sensor, fraud_predictions.key)
        assert sorted(r.partition_key for r in first.run_requests) == sorted(_partitions())
        assert tick(predictions_drift_sensor, fraud_predictions.key, first.cursor).run_requests == []
        # Their drift, measured (none in error): nothing to retrain, and no failed tick.
        for partition in _partitions():
            instance.report_runless_asset_event(
                dg.AssetMaterialization(feature_drift.key, partition=partition)
            )
        drift = tick(drift_retraining_sensor, feature_drift.key)
        assert drift.run_requests == []
        assert tick(drift_retraining_sensor, feature_drift.key, drift.cursor).run_requests == []
