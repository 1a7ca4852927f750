"""The monitoring sensors.

The three that react to materializations are Dagster multi-asset sensors (every
materialization since the cursor, per partition; Dagster keeps the cursor):
- `predictions_drift_sensor` watches `fraud_predictions` and requests `feature_drift` for
  the same region-days (not those whose drift was measured after them already);
- `drift_retraining_sensor` watches `feature_drift` and launches
  `ml_training` for a region whose drift reached ERROR — at most one run per region in
  flight, and not again within `RETRAIN_DEBOUNCE` of the last one it launched;
- `deployment_analysis_sensor` watches `scoring_decisions` and analyses the region's A/B
  test or canary step as decisions arrive.

`run_failure_alert_sensor` (Dagster's run-failure sensor) sends an ERROR alert for any
failed run, with its region. Declarative automation does not
fit these: drift is requested for exactly the scored region-days (an eager condition would
also fire on re-materialized history), and retraining is debounced and limited to one run
per region in flight, which a condition cannot express.
"""

import warnings
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.drift import feature_drift, monitoring_job
from assets.inference import fraud_predictions
from meridian.run_tags import region_of_run_tags
from resources.alerting import AlertingResource

# Dagster calls multi-asset sensors superseded by declarative automation "for most use
# cases", and names the exception: sensors with side effects that target a specific job.
# These are those (see above); the notice would only be noise on every definitions load.
warnings.filterwarnings("ignore", message="Class `MultiAssetSensorDefinition` is superseded")

RETRAIN_DEBOUNCE = timedelta(hours=12)


TRAINING_ASSETS = frozenset(
    {"training_set", "fraud_model_hyperparameters", "fraud_model", "fraud_model_promotion"}
)


def _drift_is_newer(instance: dg.DagsterInstance, partition: str, storage_id: int) -> bool:
    """feature_drift of `partition` was materialized after the predictions record `storage_id`."""
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=feature_drift.key, asset_partitions=[partition]), limit=1
    ).records
    return bool(latest) and latest[0].storage_id > storage_id


def _new_materializations(context: dg.MultiAssetSensorEvaluationContext, key: dg.AssetKey) -> list:
    """Every materialization of `key` since the sensor's cursor, oldest first (each partition's,
    not only its latest), each marked consumed: Dagster's cursor moves past them at the end of
    the tick. (Advancing to the last record only would leave every other partition's record
    "unconsumed", and Dagster fails the tick at 25 of them: the main job alone scores 36
    region-days.)"""
    records = list(context.materialization_records_for_key(key, limit=1000))
    for record in records:
        context.advance_cursor({key: record})
    return records


@dg.multi_asset_sensor(
    monitored_assets=[fraud_predictions.key],
    job=monitoring_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the drift checks for every region-day whose predictions were just materialized.",
)
def predictions_drift_sensor(context: dg.MultiAssetSensorEvaluationContext):
    for record in _new_materializations(context, fraud_predictions.key):
        partition = record.partition_key
        # Drift already measured on these predictions (the main job runs it): nothing to catch up.
        if partition and not _drift_is_newer(context.instance, partition, record.storage_id):
            yield dg.RunRequest(
                run_key=f"drift-{partition}-{record.storage_id}",
                partition_key=partition,
                tags={"meridian/region": partition.split("|")[1], "meridian/trigger": "predictions"},
            )


def _retraining_state(instance: dg.DagsterInstance, region: str) -> tuple[bool, datetime | None]:
    """(a training run of the region is queued or running, when a drift retraining last started)."""
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    # Whatever launched it (UI, schedule, CLI, another sensor) and whatever tags it carries: a
    # run of the region that trains (the ml_training job, or an asset run selecting a training asset).
    in_flight = any(
        region_of_run_tags(run.tags) == region
        and (
            run.job_name == "ml_training"
            or bool({k.to_user_string() for k in (run.asset_selection or ())} & TRAINING_ASSETS)
        )
        for run in instance.get_runs(dg.RunsFilter(statuses=active))
    )
    launched = instance.get_run_records(
        dg.RunsFilter(tags={"meridian/region": region, "meridian/trigger": "drift"}), limit=1
    )
    last = None
    if launched:
        last = launched[0].create_timestamp
        last = last if last.tzinfo else last.replace(tzinfo=UTC)
    return in_flight, last


@dg.multi_asset_sensor(
    monitored_assets=[feature_drift.key],
    job_name="ml_training",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains a region whose drift reached ERROR: one run per region at a time, debounced.",
)
def drift_retraining_sensor(context: dg.MultiAssetSensorEvaluationContext, alerting: AlertingResource):
    records = _new_materializations(context, feature_drift.key)
    regions: dict[str, str] = {}
    for record in records:
        metadata = record.asset_materialization.metadata
        for region in metadata["regions_in_error"].value if "regions_in_error" in metadata else []:
            regions[region] = record.partition_key or ""
    now = datetime.now(UTC)
    for region, partition in sorted(regions.items()):
        in_flight, last = _retraining_state(context.instance, region)
        if in_flight:
            context.log.info(f"{region}: drift in error, a training run is already queued or running")
            continue
        if last and now - last < RETRAIN_DEBOUNCE:
            context.log.info(f"{region}: drift in error, retrained at {last:%Y-%m-%d %H:%M}; debounced")
            continue
        alerting.send(
            "WARN",
            region,
            "drift_retraining_sensor",
            f"retrain:{region}",
            f"{region}: drift reached ERROR ({partition}); retraining launched",
        )
        yield dg.RunRequest(
            run_key=f"retrain-{region}-{records[-1].storage_id}",
            partition_key=region,
            tags={"meridian/region": region, "meridian/trigger": "drift"},
        )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="An ERROR alert for every failed run, with its region.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerting: AlertingResource):
    run = context.dagster_run
    region = region_of_run_tags(run.tags) or "global"
    alerting.send(
        "ERROR",
        region,
        "run_failure",
        f"run-failure:{run.job_name}:{region}",
        f"{run.job_name} failed for {region}: {context.failure_event.message}",
        {"run_id": run.run_id},
    )


@dg.multi_asset_sensor(
    monitored_assets=[dg.AssetKey("scoring_decisions")],
    job_name="deployment_analysis_job",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Analyses a region's running experiment whenever new scoring decisions land.",
)
def deployment_analysis_sensor(context: dg.MultiAssetSensorEvaluationContext):
    records = _new_materializations(context, dg.AssetKey("scoring_decisions"))
    for region in sorted({r.partition_key for r in records if r.partition_key}):
        yield dg.RunRequest(
            run_key=f"analysis-{region}-{records[-1].storage_id}",
            partition_key=region,
            tags={"meridian/region": region},
        )
