"""Replication of a region's asset classes to its DR region, and how far each replica lags.

Each class (regions.yaml) has its sources: lake tables, the warehouse, a snapshot of the
online store, the registry's aliased models, the deployment config. The registry and the
deployment config replicate synchronously (the writer waits for the DR copy).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from meridian import governance
from meridian.conflicts import LOGICAL_BITS
from meridian.dr.lake_failback import partition_of
from meridian.dr.state import STAGING, active_paths, primary_paths, replica
from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths, local_path
from meridian.replication import Replica, ReplicationResult, SourceFile, walk
from meridian.topology import Topology


def _staging(paths: RegionPaths, name: str) -> Path:
    """`<root>/.replication/<name>`, created under a root that exists: a replication run in
    flight when the region's storage is lost fails here instead of recreating the root."""
    if not paths.root.is_dir():
        raise FileNotFoundError(f"storage root {paths.root} of {paths.region} is unreachable")
    folder = paths.root / STAGING / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _snapshot_online_store(paths: RegionPaths, open_store: Callable[[RegionPaths], object] | None) -> Path:
    """A consistent copy of the region's online store, as one SQLite file.

    SQLite: the online backup API (a consistent snapshot while writers go on). Another
    backend: every row through the store interface, stamps kept, into a SQLite file.
    """
    from meridian.feature_views import feature_views
    from meridian.online_sqlite import SqliteOnlineStore

    target = _staging(paths, "online") / "online_store.db"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    store = open_store(paths) if open_store else None
    if store is None or isinstance(store, SqliteOnlineStore):
        source = paths.root / "online" / "online_store.db"
        if not source.exists():
            raise FileNotFoundError(
                f"{source}: the region has no online store yet (materialize online_features)"
            )
        with sqlite3.connect(source) as src, sqlite3.connect(tmp) as dst:
            src.backup(dst)
        dst.close()
    else:
        copy = SqliteOnlineStore(tmp)
        for view in feature_views():
            copy.write(store.iter_rows(view.name))
        copy.close()
        store.close()
    with sqlite3.connect(tmp) as con:
        con.execute("pragma journal_mode=delete")  # one self-contained file, no -wal beside it
    con.close()
    os.replace(tmp, target)
    return target


def _local_model_dir(paths: RegionPaths, client, name: str, version: int, uri: str) -> Path:
    """The model version's files on local disk: where a file store keeps them, else downloaded
    once from the tracking server into the region's staging folder (inside its zone)."""
    local = local_path(uri)
    if local is not None:
        if not local.is_dir():
            raise FileNotFoundError(f"{name} v{version}: artifacts at {uri} are not a local folder")
        return local
    import mlflow

    local = paths.root / STAGING / "model-downloads" / f"v{version}"
    if not local.is_dir():
        tmp = local.with_name(f".v{version}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _staging(paths, "model-downloads")
        tmp.mkdir()
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(tmp), tracking_uri=client.tracking_uri
        )
        os.replace(tmp, local)
    return local


def _model_sources(paths: RegionPaths, client) -> list[SourceFile]:
    """The registry state of `fraud-<region>` (aliases, versions) and the aliased models' files."""
    from meridian import registry

    name = registry.model_name(paths.region)
    aliases = {
        alias: version
        for alias in (registry.CHAMPION, registry.CHALLENGER)
        if (version := registry.alias_version(client, name, alias)) is not None
    }
    sources: list[SourceFile] = []
    versions: dict[str, dict] = {}
    for version in sorted(set(aliases.values())):
        uri = client.get_model_version_download_uri(name, str(version))
        local = _local_model_dir(paths, client, name, version, uri)
        files = walk(local, ["."])
        for f in files:
            sources.append(
                SourceFile(f"models/v{version}/{Path(f.rel).as_posix().removeprefix('./')}", f.path)
            )
        mv = client.get_model_version(name, str(version))
        versions[str(version)] = {"run_id": mv.run_id, "tags": dict(mv.tags), "source": uri}
    doc = {
        "name": name,
        "aliases": aliases,
        "versions": versions,
    }  # deterministic: unchanged state, same bytes
    target = _staging(paths, "models") / "registry.json"
    write_bytes_atomic(orjson.dumps(doc, option=orjson.OPT_INDENT_2), target)
    return [*sources, SourceFile("models/registry.json", target)]


def class_sources(
    topology: Topology,
    paths: RegionPaths,
    cls: str,
    *,
    open_store: Callable[[RegionPaths], object] | None = None,
    client=None,
) -> list[SourceFile]:
    spec = topology.replication.classes[cls]
    if cls == "online_store":
        return [SourceFile("online/online_store.db", _snapshot_online_store(paths, open_store))]
    if cls == "model_registry":
        if client is None:
            raise ValueError("model_registry replication needs an MLflow client")
        return _model_sources(paths, client)
    return walk(paths.root, spec.paths)


@dataclass
class ClassReplication:
    region: str
    target_region: str
    cls: str
    mode: str
    result: ReplicationResult
    repaired: list[str] = field(default_factory=list)
    unreplicated_before: int = 0
    oldest_unreplicated_age_s: float = 0.0


def replicate_class(
    topology: Topology,
    home: Path,
    region: str,
    cls: str,
    *,
    policy: governance.Policy | None = None,
    open_store: Callable[[RegionPaths], object] | None = None,
    client=None,
    scrub: bool = False,
    target_region: str | None = None,
) -> ClassReplication:
    """Copy one class of R's data to its DR replica: residency-checked, incremental, atomic.

    `target_region` exists for tests that try to break residency; the topology never
    names a DR region in another zone.
    """
    policy = policy or governance.default_policy()
    paths = active_paths(topology, home, region)
    target = target_region or topology.dr_region(region).name
    rep = (
        replica(topology, home, region, cls)
        if target_region is None
        else Replica(primary_paths(topology, home, target).root / "replicas" / region / cls)
    )
    # The zone check first, on the topology alone: nothing is snapshotted or read for a
    # target outside the zone, whatever the files would hold.
    if topology.zone_of(target) != topology.zone_of(region):
        sources = walk(paths.root, topology.replication.classes[cls].paths)
        governance.check_transfer(
            topology, policy, region, target, [s.path for s in sources], f"replication of {cls}"
        )
    repaired = rep.scrub() if scrub else rep.missing()
    sources = class_sources(topology, paths, cls, open_store=open_store, client=client)
    pending = rep.unreplicated(sources)
    now = time.time()
    oldest = min((s.path.stat().st_mtime for s in pending if s.path.exists()), default=now)
    result = rep.replicate(
        sources,
        meta={"source_region": region, "target_region": target, "class": cls, "source_root": str(paths.root)},
        check=lambda files: governance.check_transfer(
            topology, policy, region, target, files, f"replication of {cls}"
        ),
    )
    return ClassReplication(
        region,
        target,
        cls,
        topology.replication.classes[cls].mode,
        result,
        repaired,
        len(pending),
        max(0.0, now - oldest),
    )


def replication_lag(topology: Topology, home: Path, region: str, cls: str) -> dict[str, object]:
    """What R has that its replica does not, measured without copying (stat only)."""
    rep = replica(topology, home, region, cls)
    manifest = rep.manifest()
    paths = active_paths(topology, home, region)
    if cls == "online_store":  # by write clock: rows the read replica lacks, and how old
        staleness = read_replica_staleness(topology, home, region)
        return {
            "version": manifest["version"] if manifest else None,
            "published_at": manifest["published_at"] if manifest else None,
            "unreplicated_files": int(bool(staleness["rows_behind"])),
            "unreplicated_partitions": 0,
            "unreplicated_rows": staleness["rows_behind"] or 0,
            "lag_seconds": staleness["staleness_s"] or 0.0,
        }
    if cls == "model_registry":  # synchronous: written by the writers themselves
        pending: list[SourceFile] = []
    else:
        pending = rep.unreplicated(walk(paths.root, topology.replication.classes[cls].paths))
    now = time.time()
    oldest = min((s.path.stat().st_mtime for s in pending if s.path.exists()), default=None)
    return {
        "version": manifest["version"] if manifest else None,
        "published_at": manifest["published_at"] if manifest else None,
        "unreplicated_files": len(pending),
        "unreplicated_partitions": len({partition_of(s.rel) for s in pending if "day=" in s.rel}),
        "lag_seconds": 0.0 if oldest is None else max(0.0, now - oldest),
    }


def _newest_write_ms(db: Path) -> tuple[int, int]:
    """(newest HLC's physical ms, rows) of a SQLite online store file, read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        newest, rows = con.execute("select coalesce(max(hlc), 0), count(*) from online_features").fetchone()
    finally:
        con.close()
    return newest >> LOGICAL_BITS, rows


def read_replica_staleness(topology: Topology, home: Path, region: str) -> dict[str, object]:
    """How far the DR read replica of R's online store is behind R's store, by write clock.

    Staleness = newest write (HLC physical time) in the primary minus newest write in the
    replica, and the primary's rows written since. 0 right after a replication; it grows
    with pushes and batch writes until the next one. (SQLite primaries; a Redis primary is
    measured by its snapshot at replication time.)
    """
    rep = replica(topology, home, region, "online_store")
    manifest = rep.manifest()
    if manifest is None:
        return {
            "replica_version": None,
            "replica_rows": None,
            "replica_newest_write_age_s": None,
            "staleness_s": None,
            "rows_behind": None,
        }
    replica_ms, replica_rows = _newest_write_ms(rep.resolve("online/online_store.db"))
    primary_db = active_paths(topology, home, region).root / "online" / "online_store.db"
    out: dict[str, object] = {
        "replica_version": manifest["version"],
        "replica_rows": replica_rows,
        "replica_newest_write_age_s": round(max(0.0, time.time() - replica_ms / 1000), 3),
    }
    if primary_db.exists():
        primary_ms, _ = _newest_write_ms(primary_db)
        con = sqlite3.connect(f"file:{primary_db}?mode=ro", uri=True)
        try:
            behind = con.execute(
                "select count(*) from online_features where hlc > ?", ((replica_ms + 1) << LOGICAL_BITS,)
            ).fetchone()[0]
        finally:
            con.close()
        out |= {"staleness_s": round(max(0, primary_ms - replica_ms) / 1000, 3), "rows_behind": behind}
    else:
        out |= {"staleness_s": None, "rows_behind": None}
    return out


def sync_write_deployment(topology: Topology, home: Path, region: str, save: Callable[[Path], Path]) -> Path:
    """Write a deployment config to the DR replica first, then to the region: both, or neither visible.

    `save(root)` writes `root/deployment/config.json` (meridian.deployment.save). The DR
    copy is published (manifest + CURRENT) before the primary file is replaced; if the
    DR write fails the primary keeps its previous config and the caller reports failure.
    """
    paths = active_paths(topology, home, region)
    staged_root = _staging(paths, "deployment-next")
    staged = save(staged_root)
    rel = str(staged.relative_to(staged_root))
    if paths.host == region:  # while failed over, the DR site is the live copy: nothing to mirror
        rep = replica(topology, home, region, "deployment_config")
        current = rep.manifest() or {"files": {}}
        sources = [
            SourceFile(r, rep.object_path(e["checksum"])) for r, e in current["files"].items() if r != rel
        ]
        rep.replicate(
            [*sources, SourceFile(rel, staged)],
            meta={
                "source_region": region,
                "target_region": topology.dr_region(region).name,
                "class": "deployment_config",
            },
        )
    return save(paths.root)


def publish_deployment(topology: Topology, home: Path, region: str, config) -> Path:
    """The one way to change a region's deployment config: DR copy first, then the region.

    Every writer (the `deployment_config` asset, the analysis's advance, rollback and
    promotion) calls this, so the DR site never serves a share or a challenger the region
    has moved on from.
    """
    from meridian import deployment

    return sync_write_deployment(topology, home, region, lambda root: deployment.save(config, root))


def sync_model_registry(topology: Topology, home: Path, region: str, client) -> ClassReplication:
    """After an alias moved: publish the registry state and the aliased models' files to DR.

    The manifest lists the model files and registry.json together and is published
    atomically, so the DR region never holds an alias to a model whose files it lacks.
    """
    return replicate_class(topology, home, region, "model_registry", client=client)
