"""`replication_status`: every replica's lag against its primary, and the RPO breaches."""

import dagster as dg

from assets.replication import REPLICA_ASSETS
from meridian import dr
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource


@dg.asset(
    deps=REPLICA_ASSETS,
    group_name="global",
    owners=["team:platform"],
    kinds={"python"},
    description="Every region x class: replica version, unreplicated files and partitions, lag "
    "against the class's RPO target. WARN alert on a breach.",
)
def replication_status(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    home = lake.root()
    rows = []
    for region in topo.active_region_names:
        for cls, spec in topo.replication.classes.items():
            lag = dr.replication_lag(topo, home, region, cls)
            # A region whose lake was never written is not provisioned yet: nothing to replicate.
            lake_dir = dr.primary_paths(topo, home, region).root / "lake"
            provisioned = lake_dir.exists() or dr.is_failed_over(home, region)
            breach = provisioned and (
                lag["version"] is None or lag["lag_seconds"] > spec.max_lag_minutes * 60 + 60
            )
            rows.append(
                {
                    "region": region,
                    "dr_region": topo.dr_region(region).name,
                    "class": cls,
                    "mode": spec.mode,
                    "version": lag["version"] or "none",
                    "unreplicated_files": lag["unreplicated_files"],
                    "unreplicated_partitions": lag["unreplicated_partitions"],
                    "lag_s": round(float(lag["lag_seconds"]), 1),
                    "rpo_target_min": spec.max_lag_minutes,
                    "status": "BREACH" if breach else ("ok" if provisioned else "not provisioned"),
                }
            )
            if breach:
                alerting.send(
                    "WARN",
                    region,
                    "replication_status",
                    f"replication-lag:{region}:{cls}",
                    f"{cls} replica of {region} is {'missing' if lag['version'] is None else 'behind'}: "
                    f"{lag['unreplicated_files']} file(s), lag {lag['lag_seconds']:.0f}s "
                    f"(target {spec.max_lag_minutes} min)",
                )
    state = dr.load_state(home)
    read_replicas = [
        {
            "region": region,
            "dr_region": topo.dr_region(region).name,
            **dr.read_replica_staleness(topo, home, region),
        }
        for region in topo.active_region_names
    ]
    return dg.MaterializeResult(
        metadata={
            "replicas": dg.MetadataValue.md(markdown_table(rows)),
            "read_replicas": dg.MetadataValue.md(markdown_table(read_replicas)),
            "max_read_replica_staleness_s": max(
                (r["staleness_s"] for r in read_replicas if r["staleness_s"] is not None), default=0.0
            ),
            "breaches": sum(r["status"] == "BREACH" for r in rows),
            "max_lag_seconds": max((r["lag_s"] for r in rows), default=0.0),
            "failed_over_regions": dg.MetadataValue.json(
                {r: e for r, e in state.items() if e.get("state") == "failed_over"}
            ),
        }
    )
