"""`replication_status`: every replica's lag against its primary, and the RPO breaches."""

import dagster as dg

from assets.replication import REPLICA_ASSETS
from meridian import dr
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.online_store import OnlineStoreResource
from resources.topology import RegionTopologyResource


@dg.asset(
    deps=REPLICA_ASSETS,
    group_name="global",
    owners=["team:platform"],
    kinds={"python"},
    description="Every region x class: replica version, unreplicated files and partitions, lag "
    "against the class's RPO target; each live Redis replica's link and lag (offset bytes and "
    "seconds). WARN alert on a breach.",
)
def replication_status(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
    online_store: OnlineStoreResource,
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
    live = _live_replicas(topo, home, online_store, alerting)
    lake_rows = _object_store_lakes(topo, home, alerting)
    return dg.MaterializeResult(
        metadata={
            **(
                {
                    "object_store_lake_replicas": dg.MetadataValue.md(markdown_table(lake_rows)),
                    "object_store_lake_breaches": sum(r["status"] != "ok" for r in lake_rows),
                    "max_object_store_lake_lag_s": max((r["lag_s"] for r in lake_rows), default=0.0),
                }
                if lake_rows
                else {}
            ),
            "replicas": dg.MetadataValue.md(markdown_table(rows)),
            **(
                {
                    "live_redis_replicas": dg.MetadataValue.md(markdown_table(live)),
                    "max_live_replica_lag_s": max(
                        (r["lag_s"] for r in live if isinstance(r["lag_s"], float)), default=0.0
                    ),
                }
                if live
                else {}
            ),
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


def _object_store_lakes(topo, home, alerting: AlertingResource) -> list[dict]:
    """One row per Delta table of each region whose lake is on object storage: versions on both
    sides, commits behind and for how long (meridian.lake_replication.replica_lags). A side that
    does not answer is a breach: the replica's RPO cannot be shown."""
    from meridian.lake_replication import ReplicaLag, replica_lags, replica_location
    from meridian.lake_tables import DELTA_TABLES

    rows = []
    max_lag_s = topo.replication.classes["raw_lake"].max_lag_minutes * 60 + 60
    for region in topo.active_region_names:
        source = dr.primary_paths(topo, home, region)
        if source.lake_url is None or dr.is_failed_over(home, region):
            continue  # (failed over: the replica is the live copy, failover_regions shows it)
        try:
            target = replica_location(dr.primary_paths(topo, home, topo.dr_region(region).name), region)
            lags = replica_lags(source.lake_location.s3, target, sorted(DELTA_TABLES))
        except Exception as error:  # configuration: no DR bucket, credentials missing
            lags = [ReplicaLag("all", None, None, None, 0.0, str(error))]
        for lag in lags:
            breach = lag.problem is not None or lag.lag_seconds > max_lag_s
            row = {
                "region": region,
                "table": lag.table,
                "source_version": lag.source_version if lag.source_version is not None else "n/a",
                "replica_version": lag.replica_version if lag.replica_version is not None else "none",
                "versions_behind": lag.versions_behind if lag.versions_behind is not None else "n/a",
                "lag_s": round(lag.lag_seconds, 1),
                "status": "BREACH" if breach else "ok",
                "problem": lag.problem or "",
            }
            rows.append(row)
            if breach:
                why = lag.problem or f"{lag.versions_behind} commit(s) behind for {row['lag_s']} s"
                alerting.send(
                    "WARN",
                    region,
                    "replication_status",
                    f"lake-replica:{region}:{lag.table}",
                    f"the object-store lake replica of {region} ({lag.table}) is in breach: {why}",
                )
    return rows


def _live_replicas(topo, home, online_store: OnlineStoreResource, alerting: AlertingResource) -> list[dict]:
    """One row per region whose Redis has a live replica: its role, link and lag, as measured now."""
    from meridian.online_store import OnlineStoreUnavailable

    rows = []
    for region in topo.active_region_names:
        link = online_store.replica_link(region)
        if link is None:
            continue
        row = {"region": region, "dr_region": topo.dr_region(region).name, "replica": link.describe()}
        try:
            live = link.status()
        except OnlineStoreUnavailable as error:
            rows.append(
                {**row, "role": "unreachable", "link_up": False, "offset_lag_bytes": "n/a", "lag_s": "n/a"}
            )
            alerting.send("ERROR", region, "replication_status", f"redis-replica:{region}", str(error))
            continue
        failed_over = dr.is_failed_over(home, region)
        rows.append(
            {
                **row,
                "role": "promoted (serving)" if failed_over and live.role == "primary" else live.role,
                "link_up": live.link_up,
                "offset_lag_bytes": live.offset_lag_bytes if live.offset_lag_bytes is not None else "n/a",
                "lag_s": float(live.lag_seconds) if live.lag_seconds is not None else "n/a",
            }
        )
        if not failed_over and not live.link_up:
            alerting.send(
                "WARN",
                region,
                "replication_status",
                f"redis-replica-link:{region}",
                f"the Redis replica of {region} is not following it ({live.role}, following {live.following}); "
                "the online_store_replica asset re-attaches it",
            )
    return rows
