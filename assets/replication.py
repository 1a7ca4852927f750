"""Replicas of every regional asset class in the region's DR pair, and the sensor that keeps them current.

One replica asset per class in `platform/regions.yaml` (`raw_lake_replica`,
`features_replica`, `predictions_replica`, `online_store_replica`,
`model_registry_replica`, `deployment_config_replica`), partitioned by region, downstream
of the assets whose files it copies, so the lineage graph shows where each table's copy
lives. Each run is incremental, checksummed and table-consistent (meridian.replication),
checks residency before any byte moves, scrubs the replica (corrupt objects are found
and copied again), and reports what it closed: the files and partitions that were not
replicated before it ran and the age of the oldest of them (the RPO at that moment).

Async classes are kept current by `replication_sensor`, which measures every region's
lag with `stat` calls only and launches `regional_replication` for the regions that
have unreplicated files. Sync classes (model registry, deployment config) are written
to the DR region by the assets that change them, before they report success; their
replica assets verify and repair.

`replication_status` (assets/replication_status.py) reports every replica's lag; failover
and failback are in assets/failover.py.
"""

import sqlite3
import time

import dagster as dg
from pydantic import Field

from assets.partitions import REGION_DIMENSION, REGION_PARTITIONS
from meridian import dr, governance
from meridian.replication import UnreadableSource
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.online_store import OnlineStoreResource
from resources.topology import RegionTopologyResource

REPLICATION_GROUP = "replication"


BY_REGION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=REGION_DIMENSION)


# class -> (upstream assets, are they region x day?)
CLASS_UPSTREAM: dict[str, list[tuple[str, bool]]] = {
    "raw_lake": [
        ("raw_transactions", True),
        ("raw_labels", True),
        ("quarantined_transactions", True),
        ("quarantined_labels", True),
        ("served_transactions", False),
        ("scoring_decisions", False),
    ],
    "features": [
        ("customer_spend_view", True),
        ("merchant_risk_view", True),
        ("training_set", False),
        ("fraud_model_hyperparameters", False),
    ],
    "predictions": [
        ("fraud_predictions", True),
        ("feature_drift", True),
        ("deployment_analysis", False),
    ],
    "online_store": [("online_features", True)],
    "model_registry": [("fraud_model", False), ("fraud_model_promotion", False)],
    "deployment_config": [("deployment_config", False)],
}


KINDS = {
    "online_store": "sqlite",
    "model_registry": "mlflow",
    "deployment_config": "json",
    "features": "duckdb",
}


class ReplicaConfig(dg.Config):
    scrub: bool = Field(
        default=True,
        description="re-hash every object of the replica first; corrupt ones are deleted and copied again",
    )


def _gb(n: int) -> float:
    return n / 1e9


def _live_replica_metadata(context, link, alerting: AlertingResource) -> dict[str, object]:
    """Keep R's live Redis replica following R (re-attach it if it was detached), and measure it."""
    from meridian.online_store import OnlineStoreUnavailable

    region = link.region
    try:
        attached = link.attach()
        live = link.status()
    except OnlineStoreUnavailable as error:
        alerting.send("ERROR", region, "online_store_replica", f"redis-replica:{region}", str(error))
        raise dg.Failure(f"the live Redis replica of {region} does not answer: {error}") from error
    if attached:
        context.log.warning(
            f"{region}: the Redis replica was not following {region}; re-attached ({link.describe()})"
        )
    return {
        "live_replica": link.describe(),
        "live_replica_reattached": attached,
        "live_replica_link_up": live.link_up,
        "live_replica_sync_in_progress": live.sync_in_progress,
        "live_replica_offset_lag_bytes": live.offset_lag_bytes
        if live.offset_lag_bytes is not None
        else "n/a",
        "live_replica_lag_seconds": live.lag_seconds if live.lag_seconds is not None else "n/a",
        "live_replica_keys": live.keys,
    }


def _object_store_lake_replica(topo, lake: RegionalLakeResource, region: str, alerting) -> dict[str, object]:
    """Replicate R's Delta tables from R's bucket to its DR region's (meridian.lake_replication):
    files first, then the log in order. Empty when R's lake is a local folder."""
    from meridian.lake_replication import LakeReplicationError, replica_location, replicate_region_lake

    source = lake.primary_paths(topo, region)
    if source.lake_url is None:
        return {}
    target = lake.primary_paths(topo, topo.dr_region(region).name)
    tables = sorted(
        {
            path.split("/", 1)[1]
            for path in topo.replication.classes["raw_lake"].paths
            if path.startswith("lake/")
        }
    )
    try:
        done = replicate_region_lake(topo, governance.default_policy(), source, target, tables)
    except (LakeReplicationError, governance.ResidencyViolation) as error:
        alerting.send("ERROR", region, "raw_lake_replica", f"lake-replication:{region}", str(error))
        raise dg.Failure(str(error)) from error
    rows = [
        {
            "table": t.table,
            "source_version": t.source_version,
            "replica_version": t.replica_version,
            "versions_behind_before": (t.source_version or 0)
            - (t.replica_version_before if t.replica_version_before is not None else -1),
            "log_entries_copied": t.log_entries_copied,
            "data_files_copied": t.data_files_copied,
            "bytes_copied": t.bytes_copied,
            "seconds": round(t.seconds, 3),
        }
        for t in done
    ]
    return {
        "object_store_lake": f"{source.lake_url} → {replica_location(target, region).url}",
        "object_store_tables": dg.MetadataValue.md(markdown_table(rows) if rows else "none yet"),
        "object_store_bytes_copied": sum(t.bytes_copied for t in done),
    }


def build_replica_asset(cls: str) -> dg.AssetsDefinition:
    deps = [
        dg.AssetDep(name, partition_mapping=BY_REGION) if by_day else dg.AssetDep(name)
        for name, by_day in CLASS_UPSTREAM[cls]
    ]

    @dg.asset(
        name=f"{cls}_replica",
        partitions_def=REGION_PARTITIONS,
        deps=deps,
        group_name=REPLICATION_GROUP,
        owners=["team:platform"],
        kinds={"replica", KINDS.get(cls, "parquet")},
        tags={"meridian/replication_class": cls},
        description=f"The {cls.replace('_', ' ')} of the region, copied to its DR region (same zone): "
        "incremental, checksummed, published atomically. Metadata: version, what was copied, the lag "
        "it closed, objects repaired.",
    )
    def _replica(
        context: dg.AssetExecutionContext,
        config: ReplicaConfig,
        topology: RegionTopologyResource,
        lake: RegionalLakeResource,
        online_store: OnlineStoreResource,
        mlflow_tracking: MlflowTrackingResource,
        alerting: AlertingResource,
    ) -> dg.MaterializeResult:
        region = context.partition_key
        topo = topology.load()
        home = lake.root()
        if dr.is_failed_over(home, region):
            raise dg.Failure(
                f"{region} is failed over to {topo.dr_region(region).name}: its replica is the live copy now; "
                "fail back first (region_failover with action=failback)"
            )
        client = None
        if cls == "model_registry":
            mlflow_tracking.preflight()
            client = mlflow_tracking.client()
        lock = None
        if cls == "features":  # the warehouse is copied while no run writes it
            from meridian.locks import file_lock

            lock = file_lock(lake.paths(topo, region).warehouse_lock, shared=True, timeout_s=1800)
            lock.__enter__()
        try:
            done = dr.replicate_class(
                topo, home, region, cls, open_store=online_store.open, client=client, scrub=config.scrub
            )
        except governance.ResidencyViolation as error:
            alerting.send("ERROR", region, f"{cls}_replica", f"residency:{region}:{cls}", str(error))
            raise dg.Failure(str(error)) from error
        except UnreadableSource as error:
            alerting.send(
                "ERROR",
                region,
                f"{cls}_replica",
                f"corrupt-source:{region}:{cls}",
                f"{cls} of {region} has unreadable files; the replica at {topo.dr_region(region).name} "
                "keeps its last good version",
                {"files": dict(sorted(error.problems.items())[:20])},
            )
            raise dg.Failure(
                str(error), metadata={"unreadable": dg.MetadataValue.json(error.problems)}
            ) from error
        except FileNotFoundError as error:
            raise dg.Failure(f"{region} {cls}: nothing to replicate yet: {error}") from error
        finally:
            if lock is not None:
                lock.__exit__(None, None, None)
        result = done.result
        rates = topo.region(region).cost
        if cls == "raw_lake":  # a lake on object storage: its Delta tables, bucket to bucket
            extra_lake = _object_store_lake_replica(topo, lake, region, alerting)
        if done.repaired:
            alerting.send(
                "WARN",
                region,
                f"{cls}_replica",
                f"replica-repair:{region}:{cls}",
                f"{len(done.repaired)} corrupt or missing object(s) in the {cls} replica at "
                f"{done.target_region} were copied again",
                {"files": done.repaired[:20]},
            )
        rep = dr.replica(topo, home, region, cls)
        extra: dict[str, object] = extra_lake if cls == "raw_lake" else {}
        if cls == "online_store":
            staleness = dr.read_replica_staleness(topo, home, region)
            extra = {
                "read_replica": dg.MetadataValue.path(str(rep.resolve("online/online_store.db"))),
                "read_replica_rows": staleness["replica_rows"],
                "read_replica_staleness_s": staleness["staleness_s"]
                if staleness["staleness_s"] is not None
                else "n/a (Redis primary: snapshot at replication)",
            }
            link = online_store.replica_link(region)
            if link is not None:
                extra |= _live_replica_metadata(context, link, alerting)
        context.log.info(
            f"{region} → {done.target_region} {cls}: v{result.version}, {result.copied_files} file(s) "
            f"/ {result.copied_bytes:,} bytes copied, {result.unchanged_files} unchanged, "
            f"{len(done.repaired)} repaired"
        )
        return dg.MaterializeResult(
            metadata={
                "mode": done.mode,
                "source_region": region,
                "target_region": done.target_region,
                "zone": topo.zone_of(region),
                "replica_version": result.version,
                "published": result.published,
                "files": result.files,
                "bytes": result.bytes,
                "copied_files": result.copied_files,
                "copied_bytes": result.copied_bytes,
                "reused_files": result.reused_files,
                "unchanged_files": result.unchanged_files,
                "removed_files": result.removed_files,
                "leftover_temporaries_removed": result.temporaries_removed,
                "repaired_files": len(done.repaired),
                "unreplicated_files_before": done.unreplicated_before,
                "lag_closed_seconds": round(done.oldest_unreplicated_age_s, 3),
                "rpo_target_minutes": topo.replication.classes[cls].max_lag_minutes,
                "seconds": round(result.seconds, 3),
                "throughput_mb_s": round(result.copied_bytes / 1e6 / result.seconds, 1)
                if result.seconds
                else 0.0,
                "transfer_cost_usd": round(_gb(result.copied_bytes) * rates.transfer_gb, 6),
                "changed": dg.MetadataValue.md(
                    "\n".join(f"- `{c}`" for c in result.changed[:30])
                    + (f"\n- … {len(result.changed) - 30} more" if len(result.changed) > 30 else "")
                    or "nothing changed"
                ),
                "replica_path": dg.MetadataValue.path(str(rep.root)),
                **extra,
            }
        )

    return _replica


REPLICA_ASSETS = [build_replica_asset(cls) for cls in CLASS_UPSTREAM]


ASYNC_REPLICA_KEYS = [
    dg.AssetKey(f"{cls}_replica") for cls in ("raw_lake", "features", "predictions", "online_store")
]


regional_replication = dg.define_asset_job(
    "regional_replication",
    selection=dg.AssetSelection.groups(REPLICATION_GROUP),
    partitions_def=REGION_PARTITIONS,
    description="Copy every class of one region to its DR region (the replica assets).",
    tags={"dagster/max_retries": 1},
)


@dg.sensor(
    job=regional_replication,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute: which regions have files their replicas lack (stat only, no reads); "
    "launches regional_replication for those regions.",
)
def replication_sensor(
    context: dg.SensorEvaluationContext, topology: RegionTopologyResource, lake: RegionalLakeResource
):
    topo = topology.load()
    home = lake.root()
    for region in topo.active_region_names:
        if dr.is_failed_over(home, region):
            continue
        if down := dr.site_down(topo, home, region):
            context.log.warning(f"{region}: no replication run while its storage is down: {down}")
            continue
        pending = 0
        for cls in ("raw_lake", "features", "predictions", "online_store"):
            try:
                pending += int(dr.replication_lag(topo, home, region, cls)["unreplicated_files"])
            except (FileNotFoundError, sqlite3.Error):
                continue
        if pending:
            # One run per region per 10-minute window at most: the key dedups evaluations.
            window = int(time.time() // 600)
            yield dg.RunRequest(
                run_key=f"{region}:{window}", partition_key=region, tags={"meridian/region": region}
            )
