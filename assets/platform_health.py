"""The global view: each region's champion, drift, alerts and freshness in one table."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from assets.drift import MONITORING_GROUP, feature_drift
from assets.metadata import png_markdown
from assets.performance import model_performance
from meridian import deployment, dr, registry
from meridian.drift_rules import STATUS_RANK
from meridian.lake import partition_file
from meridian.plots import health_plot
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


def _latest_day(table_dir) -> str | None:
    """The newest day a Parquet table of the lake holds a file for."""
    days = sorted(p.name.removeprefix("day=") for p in table_dir.glob("day=*") if any(p.glob("*.parquet")))
    return days[-1] if days else None


def _latest_delta_day(table) -> str | None:
    """The newest day a Delta table of the lake (meridian.lake_tables.LakeTable) holds rows for."""
    days = sorted(p["day"] for p in table.partitions())
    return days[-1] if days else None


@dg.asset(
    deps=[feature_drift, model_performance],
    # Declarative automation: refresh the view whenever a region's drift or performance lands.
    automation_condition=dg.AutomationCondition.eager(),
    group_name=MONITORING_GROUP,
    owners=["team:platform"],
    kinds={"json"},
    description="Every region at a glance: data freshness, latest drift, champion version, open alerts "
    "(last 24 h). Aggregates only: nothing personal leaves a region.",
)
def platform_health(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    now = datetime.now(UTC)
    alerts = [a for a in alerting.read() if now - datetime.fromisoformat(a["at"]) < timedelta(hours=24)]
    client, registry_error = None, ""
    try:
        mlflow_tracking.preflight()
        client = mlflow_tracking.client()
    except Exception as error:  # the view still shows what it can; the column says why
        client, registry_error = None, f"registry unavailable: {error}"
    rows = []
    for region in topo.active_region_names:
        config = None
        try:
            paths = lake.paths(topo, region)
            site = dr.active_paths(topo, lake.root(), region).host
            config = deployment.load(paths.root, region)
            storage = "ok"
        except dr.RegionStorageUnavailable as error:  # shown, not a failed view
            paths, site, storage = None, region, str(error)
        where = {"region": region, "zone": topo.region(region).zone, "site": site, "storage": storage}
        mine = [a for a in alerts if a["region"] == region]
        counts = {
            "alerts_error_24h": sum(a["severity"] == "ERROR" for a in mine),
            "alerts_warn_24h": sum(a["severity"] == "WARN" for a in mine),
        }
        if paths is None:
            columns = ("deployment", "last_ended_experiment", "latest_lake_day", "latest_scored_day")
            columns += ("latest_drift_day", "drift", "champion_version")
            rows.append({**where, **dict.fromkeys(columns, "unavailable"), **counts})
            continue
        drift_day = _latest_day(paths.table("drift"))
        drift = "none yet"
        if drift_day:
            statuses = pl.read_parquet(partition_file(paths.table("drift"), drift_day), columns=["status"])[
                "status"
            ]
            drift = max(statuses.to_list(), key=STATUS_RANK.__getitem__)
        champion = (
            registry.alias_version(client, registry.model_name(region), registry.CHAMPION)
            if client
            else registry_error
        )
        rows.append(
            {
                **where,
                "deployment": config.strategy
                + (f" ({config.experiment_id})" if config.strategy != "champion" else ""),
                "last_ended_experiment": f"{config.ended_experiment}: {config.ended_reason}"
                if config.ended_experiment
                else "none",
                "latest_lake_day": _latest_delta_day(paths.lake_table("raw_transactions")) or "none",
                "latest_scored_day": _latest_day(paths.table("predictions")) or "none",
                "latest_drift_day": drift_day or "none",
                "drift": drift,
                "champion_version": champion if champion is not None else "none",
                **counts,
            }
        )
    lake.global_store(topo).write(
        "platform/health.json",
        json.dumps({"at": now.isoformat(), "regions": rows}, indent=1, default=str).encode(),
    )
    return dg.MaterializeResult(
        metadata={
            "regions": dg.MetadataValue.md(markdown_table(rows)),
            "plot": png_markdown(
                health_plot(rows), "open alerts per region", "the table above holds the same figures"
            ),
            "regions_with_errors": dg.MetadataValue.json(
                [r["region"] for r in rows if r["alerts_error_24h"] or r["drift"] == "error"]
            ),
        }
    )
