"""Failover to the DR region and failback with reconciliation (meridian.conflicts' rule)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl

from meridian.dr.lake_failback import (
    check_primary_holds,
    checkout_versions,
    delta_table_of,
    merge_back,
    object_store_lake_replica,
    partition_of,
    reseed_lake_replica,
    unreplicated_partitions,
)
from meridian.dr.online import promote_for_failover, reattach, redis_rows_lost, snapshot_rows_lost
from meridian.dr.probes import probe
from meridian.dr.state import (
    FailoverError,
    active_paths,
    failover_root,
    load_state,
    primary_paths,
    replica,
    save_state,
)
from meridian.lake_tables import LakeLocation
from meridian.paths import RegionPaths, local_path
from meridian.redis_replication import PROMOTED_MARKER, RedisReplicaLink
from meridian.replication import hash_file, walk
from meridian.topology import Topology


@dataclass
class FailoverReport:
    region: str
    serving_region: str
    action: str
    seconds: float
    replica_versions: dict[str, int | None]
    replica_published_at: dict[str, float | None]
    files: int = 0
    rpo_seconds: float | None = None
    reconciled: dict[str, int] = field(default_factory=dict)
    rpo_partitions: int | None = None
    rpo_files: list[str] = field(default_factory=list)
    # Online rows the primary wrote before the fault that the replica used did not hold
    # (None: nothing to compare them with).
    rpo_online_rows: int | None = None
    # The live Redis replica, where the deployment has one (meridian.redis_replication):
    # failover: promoted or not (and why), and how far behind it was; failback: re-attached.
    online_replica: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def fail_over(
    topology: Topology,
    home: Path,
    region: str,
    reason: str,
    *,
    by: str = "manual",
    online_replica: RedisReplicaLink | None = None,
) -> FailoverReport:
    """Promote R's DR region for R: check out every replica into R's failover root, then switch.

    With `online_replica` (R's Redis has a live replica in the DR region), the replica is
    promoted (`REPLICAOF NO ONE`) and serves R's online store; when it cannot be (it is down,
    or still in its first sync) the online store's snapshot serves instead, and the report
    says why.
    """
    started = time.perf_counter()
    dr = topology.dr_region(region)
    state = load_state(home)
    if state.get(region, {}).get("state") == "failed_over":
        raise FailoverError(f"{region} is already failed over to {state[region]['serving_region']}")
    replicas = {cls: replica(topology, home, region, cls) for cls in topology.replication.classes}
    empty = [cls for cls, rep in replicas.items() if rep.current_version() is None]
    needed = ["model_registry"] if online_replica is not None else ["model_registry", "online_store"]
    if any(cls in empty for cls in needed):
        raise FailoverError(
            f"{dr.name} cannot serve {region}: no replica of {', '.join(sorted(empty))} "
            "(materialize the replica assets first)"
        )
    missing = {cls: rep.missing() for cls, rep in replicas.items() if rep.current_version() is not None}
    missing = {cls: m for cls, m in missing.items() if m}
    if missing:
        raise FailoverError(f"{dr.name}'s replicas of {region} lack files: {missing}; re-run replication")
    lake_url, lake_versions = object_store_lake_replica(topology, home, region)
    target = failover_root(topology, home, region)
    staging = target.with_name(f".{region}.checkout")
    shutil.rmtree(staging, ignore_errors=True)
    files = sum(rep.checkout(staging) for rep in replicas.values() if rep.current_version() is not None)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    doc = orjson.loads((target / "models" / "registry.json").read_bytes())
    if "champion" not in doc["aliases"]:
        raise FailoverError(f"the registry replica of {region} has no champion")
    promoted = promote_for_failover(online_replica, target, "online_store" not in empty)
    published = {cls: (rep.manifest() or {}).get("published_at") for cls, rep in replicas.items()}
    async_times = [
        published[c]
        for c, spec in topology.replication.classes.items()
        if spec.mode == "async" and published[c]
    ]
    report = FailoverReport(
        region,
        dr.name,
        "failover",
        0.0,
        {cls: rep.current_version() for cls, rep in replicas.items()},
        published,
        files,
        rpo_seconds=(time.time() - min(async_times)) if async_times else None,
        online_replica=promoted,
    )
    state[region] = {
        "state": "failed_over",
        "serving_region": dr.name,
        "since": datetime.now(UTC).isoformat(),
        "since_ts": time.time(),
        "reason": reason,
        "by": by,
        "replica_versions": report.replica_versions,
        "replica_published_at": published,
    }
    if lake_url is not None:
        state[region] |= {"lake_url": lake_url, "lake_versions": lake_versions}
    save_state(home, state)
    report.seconds = time.perf_counter() - started
    return report


def _merge_parquet(primary: Path, failover: Path, primary_site: str, dr_site: str) -> pl.DataFrame:
    return merge_rows(pl.read_parquet(primary), pl.read_parquet(failover), primary_site, dr_site)


def merge_rows(
    primary: pl.DataFrame, failover: pl.DataFrame, primary_site: str, dr_site: str
) -> pl.DataFrame:
    """Rows of both versions of one partition; on a key both hold, the conflict rule decides.

    Lake rows carry no HLC: the order is (event time, site), the site breaking ties the
    same way on every run (the DR site's row wins a tie: it is the newer write of the two).
    """
    a = primary.with_columns(_site=pl.lit(primary_site), _rank=pl.lit(0))
    b = failover.with_columns(_site=pl.lit(dr_site), _rank=pl.lit(1))
    both = pl.concat([a, b], how="diagonal_relaxed")
    key = next((k for k in ("request_id", "transaction_id") if k in both.columns), None)
    if key is None:
        return both.drop("_site", "_rank").unique(maintain_order=True)
    order = [c for c in ("chargeback_at", "event_time") if c in both.columns]
    return (
        both.sort([*order, "_rank"], nulls_last=False)
        .unique(subset=[key], keep="last", maintain_order=False)
        .sort(key)
        .drop("_site", "_rank")
    )


def _verify_primary_holds_what_replicas_held(
    region: str, dr_name: str, primary: RegionPaths, used: dict[str, dict]
) -> None:
    """Refuse a failback to storage that is not the one that failed: every file the replicas
    held at the failover (lake tables, warehouse, registry, deployment config, stream log)
    must be there again. An empty or other volume would otherwise be "reconciled" into,
    report an RPO of 0 and serve 503s (no champion) once traffic switched back.

    Not checked here: the online store (a snapshot, compared row by row in the RPO) and the
    model registry (its replica is an export of MLflow's registry, which lives in MLflow, not
    under the region's root: `_verify_registry_holds_what_its_replica_held`)."""
    expected = {
        rel: cls
        for cls, manifest in used.items()
        if cls not in ("online_store", "model_registry")
        for rel in manifest["files"]
    }
    missing = sorted(rel for rel in expected if not (primary.root / rel).is_file())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FailoverError(
            f"failback refused: {region}'s storage at {primary.root} lacks {len(missing)} of "
            f"{len(expected)} files its replicas held at the failover ({shown}); it is not the "
            f"storage that failed. Restore it (or re-provision and re-replicate) and keep serving "
            f"{region} from {dr_name} meanwhile"
        )


def _verify_registry_holds_what_its_replica_held(region: str, dr_name: str, rep, used: dict, client) -> None:
    """Refuse a failback while the primary's registry lacks what its replica held at the
    failover: every version it exported (with its model files readable where the registry
    says they are) and an alias for each alias it held. Serving back would load no champion."""
    import mlflow

    from meridian import registry

    entry = used["files"].get("models/registry.json")
    if entry is None:
        return
    doc = orjson.loads(rep.object_path(entry["checksum"]).read_bytes())
    name, problems = doc["name"], []
    for version in sorted(doc["versions"], key=int):
        try:
            uri = client.get_model_version_download_uri(name, version)
        except Exception as error:  # MlflowException (missing), or the server is unreachable
            problems.append(f"v{version}: {type(error).__name__}: {str(error).splitlines()[0]}")
            continue
        local = local_path(uri)
        try:
            has_files = (
                local.is_dir() and any(local.iterdir())
                if local is not None
                else bool(mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=client.tracking_uri))
            )
        except Exception as error:
            problems.append(f"v{version}: its model files at {uri}: {type(error).__name__}")
            continue
        if not has_files:
            problems.append(f"v{version}: no model files at {uri}")
    for alias in doc["aliases"]:
        if registry.alias_version(client, name, alias) is None:
            problems.append(f"alias {alias!r} is gone")
    if problems:
        raise FailoverError(
            f"failback refused: the model registry of {region} lacks what its replica held at the "
            f"failover ({'; '.join(problems)}); serving back would load no model. Restore the "
            f"registry and its artifacts, and keep serving {region} from {dr_name} meanwhile"
        )


def fail_back(
    topology: Topology,
    home: Path,
    region: str,
    *,
    open_store: Callable[[RegionPaths], object] | None = None,
    drain_seconds: float = 5.0,
    registry_client=None,
    online_replica: RedisReplicaLink | None = None,
) -> FailoverReport:
    """Serve R from R again, then reconcile what R's DR site wrote into R's own root.

    `drain_seconds` must exceed the serving layer's poll interval: pushes and log lines a
    service writes at the DR site until it notices the switch are merged, not lost.
    `registry_client` (an MlflowClient of the primary's registry) is checked against the
    registry replica before anything switches; without one the registry is not checked.
    `online_replica`: R's live Redis replica. When the failover promoted it, the rows the DR
    site wrote are merged from it into R's Redis, then it is re-attached (`REPLICAOF`: it
    resyncs from R's primary); the online RPO is what R's primary held before the fault that
    the promoted replica did not.
    """
    from meridian.feature_views import feature_views
    from meridian.lake import write_parquet_atomic

    started = time.perf_counter()
    state = load_state(home)
    entry = state.get(region)
    if not entry or entry.get("state") != "failed_over":
        raise FailoverError(f"{region} is not failed over")
    health = probe(topology, home, region)
    if not health.ok:
        raise FailoverError(f"{region} is still unhealthy: {'; '.join(health.problems)}")
    dr_name = entry["serving_region"]
    primary = primary_paths(topology, home, region)
    site = failover_root(topology, home, region)
    since = entry["since_ts"]
    reconciled = {"copied_back": 0, "merged": 0, "online_rows": 0, "warehouse": 0}
    replicas = {cls: replica(topology, home, region, cls) for cls in topology.replication.classes}
    used = {
        cls: (rep.manifest(entry["replica_versions"][cls]) or {"files": {}})
        if entry["replica_versions"].get(cls)
        else {"files": {}}
        for cls, rep in replicas.items()
    }
    _verify_primary_holds_what_replicas_held(region, dr_name, primary, used)
    lake_versions = entry.get("lake_versions") or {}
    # A lake on object storage: R's replica in the DR bucket served it (still the active paths here).
    dr_lake = active_paths(topology, home, region).lake_location if entry.get("lake_url") else None
    primary_lake = primary.lake_location if dr_lake is not None else None
    if dr_lake is not None:
        problems = check_primary_holds(primary_lake, dr_lake, lake_versions)
        if problems:
            raise FailoverError(
                f"failback refused: {region}'s lake at {primary.lake_url} lacks the commits its replica "
                f"held at the failover ({'; '.join(problems)}); it is not the storage that failed. "
                f"Restore it and keep serving {region} from {dr_name} meanwhile"
            )
    if registry_client is not None:
        _verify_registry_holds_what_its_replica_held(
            region, dr_name, replicas["model_registry"], used["model_registry"], registry_client
        )
    at_failover = {rel for m in used.values() for rel in m["files"]}
    # RPO, measured now that the primary is readable again: what it held at the fault that
    # no replica had (in a real loss of the site these would be gone).
    lost = []
    for cls, spec in topology.replication.classes.items():
        if cls in ("online_store", "model_registry"):
            continue
        published = entry["replica_published_at"].get(cls) or 0.0
        for source in walk(primary.root, spec.paths):
            mtime = source.path.stat().st_mtime
            if mtime > since:
                continue  # written after the fault: not part of what the failover lost
            had = used[cls]["files"].get(source.rel)
            if had is None or (mtime > published and hash_file(source.path)[0] != had["checksum"]):
                lost.append(source.rel)
    if dr_lake is not None:  # the primary's commits the replica never got (all from before the fault)
        lost.extend(unreplicated_partitions(primary_lake, lake_versions))
    promoted = online_replica is not None and (site / PROMOTED_MARKER).is_file()
    if promoted:
        rpo_online_rows = redis_rows_lost(open_store, primary, online_replica, dr_name, since)
    else:
        rpo_online_rows = snapshot_rows_lost(primary, replicas["online_store"], used["online_store"], since)
    # Switch first: from here R's writers (assets, the service within its poll interval) write
    # to R's own root, where the merge below is safe against them (last writer wins). Then
    # wait for writers still on the DR site to drain, and merge what they wrote.
    state[region] = {
        "state": "primary",
        "serving_region": region,
        "since": datetime.now(UTC).isoformat(),
        "since_ts": time.time(),
        "reason": f"failback from {dr_name}",
        "previous_failover": {k: v for k, v in entry.items() if k != "previous_failover"},
    }
    save_state(home, state)
    time.sleep(drain_seconds)
    # Files written at the DR site during the failover (lake and stream): back to the primary.
    # Delta tables: the DR site's commits re-applied as new commits (meridian.dr.lake_failback).
    delta_tables = set()
    for cls, spec in topology.replication.classes.items():
        if cls in ("online_store", "model_registry", "deployment_config"):
            continue
        for source in walk(site, spec.paths):
            if (table := delta_table_of(source.rel)) is not None:
                delta_tables.add(table)
                continue
            if source.path.stat().st_mtime < since and source.rel in at_failover:
                continue  # checked out from the replica and never touched at the DR site
            dest = primary.root / source.rel
            if source.rel == "warehouse.duckdb":
                # Derived data: the DR site's warehouse is newer than anything the primary
                # holds for the failover period; the next dbt run re-derives the rest.
                tmp = dest.with_name(f".{dest.name}.failback.tmp")
                shutil.copyfile(source.path, tmp)
                os.replace(tmp, dest)
                reconciled["warehouse"] += 1
            elif dest.exists() and dest.suffix == ".parquet":
                merged = _merge_parquet(dest, source.path, region, dr_name)
                write_parquet_atomic(merged, dest)
                reconciled["merged"] += 1
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.failback.tmp")
                shutil.copyfile(source.path, tmp)
                os.replace(tmp, dest)
                reconciled["copied_back"] += 1
    merge = lambda ours, theirs: merge_rows(ours, theirs, region, dr_name)  # noqa: E731
    if dr_lake is None:
        reconciled["merged"] += merge_back(
            LakeLocation.local(primary.lake),
            LakeLocation.local(site / "lake"),
            sorted(delta_tables),
            checkout_versions(at_failover),
            merge,
        )
    else:  # the replica served R in place: merge from it, rewind it, replicate R's commits over
        reconciled["merged"] += merge_back(
            primary_lake,
            dr_lake,
            sorted(lake_versions),
            {t: v for t, v in lake_versions.items() if v is not None},
            merge,
        )
        reconciled["replica_entries_rewound"] = reseed_lake_replica(
            topology, primary_lake, dr_lake, lake_versions
        )
    # Online rows: last-writer-wins on (event time, HLC, site), stamps kept both ways.
    from meridian.online_sqlite import SqliteOnlineStore

    dr_store = (
        online_replica.open_replica(origin=dr_name)
        if promoted
        else SqliteOnlineStore(site / "online" / "online_store.db", origin=dr_name)
    )
    primary_store = (
        open_store(primary)
        if open_store
        else SqliteOnlineStore(primary.root / "online" / "online_store.db", origin=region)
    )
    for view in feature_views():
        reconciled["online_rows"] += primary_store.write(dr_store.iter_rows(view.name)).applied
    dr_store.close()
    primary_store.close()
    replica_report = reattach(online_replica) if online_replica is not None else None
    shutil.rmtree(site, ignore_errors=True)
    return FailoverReport(
        region,
        region,
        "failback",
        time.perf_counter() - started,
        {cls: rep.current_version() for cls, rep in replicas.items()},
        {cls: (rep.manifest() or {}).get("published_at") for cls, rep in replicas.items()},
        reconciled=reconciled,
        rpo_partitions=len({partition_of(r) for r in lost if "day=" in r}),
        rpo_files=sorted(lost),
        rpo_online_rows=rpo_online_rows,
        online_replica=replica_report,
    )
