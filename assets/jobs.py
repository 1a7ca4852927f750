"""Jobs and schedules over the regional graph."""

import dagster as dg

from assets.partitions import REGION_DAY_PARTITIONS

REGIONAL_PIPELINE_JOB = "regional_pipeline"

regional_pipeline = dg.define_asset_job(
    REGIONAL_PIPELINE_JOB,
    selection=dg.AssetSelection.all(),
    partitions_def=REGION_DAY_PARTITIONS,
    description="Ingest and transform region-days: lake, quarantine, dbt staging, labels and features.",
)

daily_regional_schedule = dg.build_schedule_from_partitioned_job(
    regional_pipeline,
    hour_of_day=2,
    description="Each night, the previous day for every active region (one run per region).",
)
