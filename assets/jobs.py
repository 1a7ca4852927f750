"""Jobs and schedules over the regional graph."""

import dagster as dg

from assets.drift import MONITORING_GROUP
from assets.ml_shared import INFERENCE_GROUP, ML_GROUP
from assets.partitions import REGION_DAY_PARTITIONS, REGION_PARTITIONS, TOPOLOGY
from assets.serving import SERVING_GROUP

REGIONAL_PIPELINE_JOB = "regional_pipeline"
ML_TRAINING_JOB = "ml_training"
BATCH_INFERENCE_JOB = "batch_inference"

regional_pipeline = dg.define_asset_job(
    REGIONAL_PIPELINE_JOB,
    selection=dg.AssetSelection.all()
    - dg.AssetSelection.groups(
        ML_GROUP, INFERENCE_GROUP, SERVING_GROUP, MONITORING_GROUP, "replication", "global"
    ),
    partitions_def=REGION_DAY_PARTITIONS,
    description="Ingest and transform region-days: lake, quarantine, dbt staging, labels and features.",
)

ml_training = dg.define_asset_job(
    ML_TRAINING_JOB,
    selection=dg.AssetSelection.groups(ML_GROUP),
    partitions_def=REGION_PARTITIONS,
    description="For one region: training set, hyperparameter search, model (MLflow) and promotion.",
)

batch_inference = dg.define_asset_job(
    BATCH_INFERENCE_JOB,
    selection=dg.AssetSelection.groups(INFERENCE_GROUP),
    partitions_def=REGION_DAY_PARTITIONS,
    description="Score region-days with each region's champion.",
)

daily_regional_schedule = dg.build_schedule_from_partitioned_job(
    regional_pipeline,
    hour_of_day=2,
    description="Each night, the previous day for every active region (one run per region).",
)

daily_inference_schedule = dg.build_schedule_from_partitioned_job(
    batch_inference,
    hour_of_day=4,
    description="Each night after the pipeline, score the previous day in every active region.",
)


@dg.schedule(
    job=ml_training,
    cron_schedule="0 5 * * 1",
    execution_timezone="UTC",
    description="Weekly retraining: one ml_training run per active region (promotion decides).",
)
def weekly_retraining_schedule(context: dg.ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for region in TOPOLOGY.active_region_names:
        yield dg.RunRequest(
            run_key=f"{region}-{stamp}", partition_key=region, tags={"meridian/region": region}
        )
