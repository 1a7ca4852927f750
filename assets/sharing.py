"""`global_merchant_risk`: the one dataset shared across zones (meridian.sharing)."""

import dagster as dg
import polars as pl

from assets.governance import GLOBAL_GROUP
from meridian import governance
from meridian.report import markdown_table
from meridian.sharing import aggregate_shared, regional_extract
from meridian.validation import currency_rates
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

WINDOW_DAYS = 30
SHARED_NAME = "global/merchant_risk/data.parquet"  # in the global store


@dg.asset(
    deps=[
        dg.AssetDep("raw_transactions", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("raw_labels", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name=GLOBAL_GROUP,
    owners=["team:risk-analytics"],
    kinds={"parquet"},
    tags={"meridian/classification": "aggregate"},
    description="Merchant fraud risk across every region (last 30 days): aggregate and public columns "
    "only, computed from pseudonymised per-zone extracts, small groups suppressed.",
)
def global_merchant_risk(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.MaterializeResult:
    topo = topology.load()
    policy = governance.default_policy()
    home = lake.root()
    rates = currency_rates()
    extracts = []
    for region in topo.active_region_names:
        paths = lake.paths(topo, region)
        if not paths.lake_table("raw_transactions").partitions():
            continue  # nothing ingested yet (and no key is created for an empty zone)
        zone = topo.zone_of(region)
        key = governance.zone_key(topo, policy, zone, home)
        extracts.append(regional_extract(paths, region, zone, key, policy, WINDOW_DAYS))
    table, suppressed = aggregate_shared(extracts, rates, policy.min_group_size)
    if table.is_empty():
        raise dg.Failure("no region has transactions yet: run the regional pipeline first")
    # What is stored outside every zone is checked like any transfer would be.
    leaked = policy.zone_bound(table.columns)
    if leaked:
        raise dg.Failure(f"global_merchant_risk would store zone-bound columns {leaked}; refused")
    store = lake.global_store(topo)
    size = store.write_parquet(SHARED_NAME, table)
    top = table.filter(pl.col("transactions") >= 50).sort("fraud_rate", descending=True).head(10)
    return dg.MaterializeResult(
        metadata={
            "rows": table.height,
            "bytes": size,
            "suppressed_groups": suppressed,
            "min_group_size": policy.min_group_size,
            "by_region": dg.MetadataValue.json(
                {r: int(n) for r, n in table.group_by("region").len().iter_rows()}
            ),
            "column_classification": dg.MetadataValue.json(policy.classify_all(table.columns)),
            "riskiest_merchants": dg.MetadataValue.md(markdown_table(top.to_dicts())),
            "path": dg.MetadataValue.path(store.url(SHARED_NAME)),
        }
    )
