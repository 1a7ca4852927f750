"""Batch inference's standalone check: each stored region-day of predictions is usable."""

import dagster as dg

from assets.checks import check_stored_partitions, partitioned_check
from meridian.stored_checks import prediction_partition_problems
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource


@partitioned_check(
    asset="fraud_predictions",
    name="stored_partition_holds_scores",
    description="The stored file of each region-day, read back: one row per transaction, of that day, "
    "each with a finite probability and the model version that produced it.",
)
def fraud_predictions_stored_scores(
    context: dg.AssetCheckExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.AssetCheckResult:
    return check_stored_partitions(
        context,
        topology,
        lake,
        "predictions",
        lambda frame, _region, day: prediction_partition_problems(frame, day),
    )
