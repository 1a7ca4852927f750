"""Ingestion's standalone check: each stored region-day of raw_transactions holds its contract."""

import dagster as dg

from assets.checks import check_stored_partitions, partitioned_check
from meridian.stored_checks import transaction_partition_problems
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource


@partitioned_check(
    asset="raw_transactions",
    name="stored_partition_holds_the_contract",
    description="The stored file of each region-day, read back: the accepted columns and types, unique "
    "ids, event times inside the day (UTC), positive finite amounts, the region's currencies and customers.",
)
def raw_transactions_stored_contract(
    context: dg.AssetCheckExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.AssetCheckResult:
    return check_stored_partitions(
        context, topology, lake, "raw_transactions", transaction_partition_problems
    )
