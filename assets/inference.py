"""Batch inference: every region-day's transactions scored by the region's champion, to `predictions/day=<day>`."""

import time

import dagster as dg
import duckdb

from assets.features import view_asset_key
from assets.ml_shared import ALL_DAYS_OF_REGION, INFERENCE_GROUP, OWNERS, load_booster
from assets.partitions import REGION_DAY_PARTITIONS, RegionFailures, days_by_region
from assets.promotion import fraud_model_promotion
from assets.transforms import STG_TRANSACTIONS
from meridian import registry
from meridian.batch_scoring import (
    FEATURES_COMPLETE,
    VIEW_TUPLE,
    VIEW_VERSIONS,
    prediction_features_by_day,
    score_frame,
)
from meridian.feature_store import complete_from, history_start
from meridian.locks import file_lock
from meridian.report import markdown_table
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


@dg.asset(
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep(STG_TRANSACTIONS),
        *(dg.AssetDep(view_asset_key(v.name)) for v in VIEW_TUPLE),
        dg.AssetDep(fraud_model_promotion, partition_mapping=ALL_DAYS_OF_REGION),
    ],
    group_name=INFERENCE_GROUP,
    owners=OWNERS,
    kinds={"lightgbm", "parquet"},
    description="Every transaction of the day scored by the region's champion, with the model "
    "version and feature-view versions, in the region's lake.",
)
def fraud_predictions(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    client = None
    per_day = []
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region, days in run_days.items():
        with failures.region(region):
            client = client or mlflow_tracking.client()
            name = registry.model_name(region)
            version = registry.alias_version(client, name, registry.CHAMPION)
            if version is None:
                raise dg.Failure(
                    f"{name} has no champion: run the `ml_training` job for {region} (training promotes the first model)"
                )
            booster = load_booster(mlflow_tracking, region, version)
            paths = lake.paths(topo, region)
            with (
                file_lock(paths.warehouse_lock, shared=True),
                duckdb.connect(str(paths.warehouse), read_only=True) as con,
            ):
                warm_from = complete_from(history_start(con), VIEW_TUPLE)
                started = time.perf_counter()
                for day, features in prediction_features_by_day(con, topo.region(region), days, warm_from):
                    # A run of days is retrieved at once: its time is charged to its first day.
                    retrieved = time.perf_counter()
                    scored = score_frame(booster, features, name, version)
                    predicted = time.perf_counter()
                    written = lake.write_partition(paths, "predictions", day, scored)
                    row = {
                        "region": region,
                        "day": day,
                        "rows": written.rows,
                        "model_version": version,
                        "mean_score": round(float(scored["score"].mean()), 5) if scored.height else 0.0,
                        "rows_warming_up": int((~scored[FEATURES_COMPLETE]).sum()),
                        "flagged_at_0.5": int((scored["score"] >= 0.5).sum()),
                        "retrieval_s": round(retrieved - started, 3),
                        "scoring_s": round(predicted - retrieved, 3),
                        "write_s": round(time.perf_counter() - predicted, 3),
                    }
                    per_day.append(row)
                    started = time.perf_counter()
                    context.log_event(
                        dg.AssetObservation(
                            asset_key=context.asset_key,
                            partition=dg.MultiPartitionKey({"region": region, "day": day}),
                            metadata={k: v for k, v in row.items() if k not in ("region", "day")},
                        )
                    )
    failures.raise_if_any([context.asset_key], run_days)
    total = sum(r["rows"] for r in per_day)
    return dg.MaterializeResult(
        metadata={
            "run_total_rows": total,
            "run_total_flagged_at_0.5": sum(r["flagged_at_0.5"] for r in per_day),
            "model_versions": dg.MetadataValue.json(
                sorted({f"{r['region']}:v{r['model_version']}" for r in per_day})
            ),
            "feature_view_versions": dg.MetadataValue.json(VIEW_VERSIONS),
            "per_day": dg.MetadataValue.md(markdown_table(per_day)),
        }
    )
