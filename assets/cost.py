"""`cost_report`: storage, replication transfer and compute from the instance's history, priced by meridian.cost."""

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.governance import GLOBAL_GROUP
from assets.metadata import png_markdown
from assets.replication import CLASS_UPSTREAM
from assets.replication_status import replication_status
from meridian import cost
from meridian.paths import region_paths
from meridian.plots import cost_plot
from meridian.report import markdown_table
from meridian.run_tags import region_of_run_tags
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

HISTORY_PAGE = 500  # records per query when the cost report pages through the instance's history


def replicated_bytes(
    instance: dg.DagsterInstance, regions: list[str], since: float
) -> dict[tuple[str, str], int]:
    """Bytes copied per (source, target) from the replica assets' materializations since `since`,
    every page of them."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for cls in CLASS_UPSTREAM:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(f"{cls}_replica"), after_timestamp=since),
                limit=HISTORY_PAGE,
                cursor=cursor,
            )
            for record in page.records:
                meta = record.asset_materialization.metadata if record.asset_materialization else {}
                if "copied_bytes" in meta:
                    pair = (meta["source_region"].value, meta["target_region"].value)
                    out[pair] += int(meta["copied_bytes"].value)
            if not page.has_more:
                break
            cursor = page.cursor
    return out


def compute_seconds(
    instance: dg.DagsterInstance, regions: list[str], since: float
) -> dict[tuple[str, str], float]:
    """Step seconds per (region, asset/step) from the run history since `since`, every page of it."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    cursor = None
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(updated_after=datetime.fromtimestamp(since, UTC)), limit=HISTORY_PAGE, cursor=cursor
        )
        for record in records:
            run = record.dagster_run
            region = region_of_run_tags(run.tags, regions) or "global"
            for step in instance.get_run_step_stats(run.run_id):
                if step.start_time and step.end_time:
                    out[(region, step.step_key)] += step.end_time - step.start_time
        if len(records) < HISTORY_PAGE:
            break
        cursor = records[-1].dagster_run.run_id
    return out


@dg.asset(
    deps=[replication_status],
    group_name=GLOBAL_GROUP,
    owners=["team:platform"],
    kinds={"python"},
    description="Bytes stored, bytes replicated between regions and compute seconds per asset and region "
    "(last 30 days of runs), priced with regions.yaml's rates; totals per region and per region pair, "
    "and a plot.",
)
def cost_report(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.MaterializeResult:
    topo = topology.load()
    home = lake.root()
    store = lake.global_store(topo)
    since = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    names = [r.name for r in topo.regions]
    report = cost.price(
        topo,
        stored={r.name: cost.dir_bytes(region_paths(r, home).root) for r in topo.regions},
        global_stored=store.stored_bytes("global", "platform"),
        replicated=replicated_bytes(context.instance, names, since),
        compute=compute_seconds(context.instance, names, since),
    )
    name = "platform/cost_report.json"
    doc = {
        "at": datetime.now(UTC).isoformat(),
        "per_region": report.per_region,
        "per_pair": report.per_pair,
        "per_asset": report.per_asset,
        "unpriced": report.unpriced,
    }
    store.write(name, json.dumps(doc, indent=1).encode())
    return dg.MaterializeResult(
        metadata={
            "total_usd": report.total_usd,
            "per_region": dg.MetadataValue.md(markdown_table(report.per_region)),
            "per_region_pair": dg.MetadataValue.md(
                markdown_table(report.per_pair) if report.per_pair else "nothing replicated yet"
            ),
            "top_compute_steps": dg.MetadataValue.md(
                markdown_table(report.per_asset[:15]) if report.per_asset else "no runs"
            ),
            "plot": png_markdown(
                cost_plot(report.per_region),
                "cost by region",
                "per_region above and cost_report.json hold the figures",
            ),
            "unpriced": dg.MetadataValue.json(report.unpriced),
            "path": dg.MetadataValue.path(store.url(name)),
        }
    )
