"""Disaster recovery of a region: replicas per asset class, health probes, failover, failback.

Replicas (meridian.replication) of active region R live in its DR region D (same
residency zone, enforced when the topology loads and again before every transfer):

    <D root>/replicas/<R>/<class>/          one replica per asset class (regions.yaml)
    <D root>/failover/<R>/                  R's root while R is failed over to D

State of the control plane: `$MERIDIAN_HOME/platform/failover.json`, replaced atomically.
While R is failed over, `active_paths(R)` is `<D root>/failover/<R>` (a checkout of the
replicas), so R's assets run and R's traffic is served in D without any asset code
knowing. Failback reconciles what both sides wrote (meridian.conflicts' rule) into R's
root and returns R to its own site.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl

from meridian import governance
from meridian.conflicts import LOGICAL_BITS
from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths, region_paths
from meridian.replication import Replica, ReplicationResult, SourceFile, hash_file, walk
from meridian.topology import Topology

STAGING = ".replication"  # under the region root: snapshots taken for a replication run
HEARTBEAT = "heartbeat.json"


class FailoverError(RuntimeError):
    """A failover or failback cannot proceed; the message says what is missing."""


# ---------------------------------------------------------------- state


def state_path(home: Path) -> Path:
    return home / "platform" / "failover.json"


def load_state(home: Path) -> dict[str, dict]:
    try:
        return orjson.loads(state_path(home).read_bytes())
    except FileNotFoundError:
        return {}


def _save_state(home: Path, state: dict[str, dict]) -> None:
    write_bytes_atomic(orjson.dumps(state, option=orjson.OPT_INDENT_2), state_path(home))


def is_failed_over(home: Path, region: str) -> bool:
    return load_state(home).get(region, {}).get("state") == "failed_over"


def primary_paths(topology: Topology, home: Path, region: str) -> RegionPaths:
    return region_paths(topology.region(region), home)


def failover_root(topology: Topology, home: Path, region: str) -> Path:
    return primary_paths(topology, home, topology.dr_region(region).name).root / "failover" / region


def active_paths(topology: Topology, home: Path, region: str) -> RegionPaths:
    """Where region R's data lives now: its own root, or its DR site while failed over."""
    entry = load_state(home).get(region)
    if entry and entry.get("state") == "failed_over":
        return RegionPaths(region, failover_root(topology, home, region), site=entry["serving_region"])
    return primary_paths(topology, home, region)


def replica(topology: Topology, home: Path, region: str, cls: str) -> Replica:
    dr = topology.dr_region(region)
    return Replica(primary_paths(topology, home, dr.name).root / "replicas" / region / cls)


# ---------------------------------------------------------------- sources per class


def _snapshot_online_store(paths: RegionPaths, open_store: Callable[[RegionPaths], object] | None) -> Path:
    """A consistent copy of the region's online store, as one SQLite file.

    SQLite: the online backup API (a consistent snapshot while writers go on). Another
    backend: every row through the store interface, stamps kept, into a SQLite file.
    """
    from meridian.feature_views import feature_views
    from meridian.online_store import SqliteOnlineStore

    target = paths.root / STAGING / "online" / "online_store.db"
    target.parent.mkdir(parents=True, exist_ok=True)
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
    if uri.startswith(("file://", "/")):
        local = Path(uri.removeprefix("file://"))
        if not local.is_dir():
            raise FileNotFoundError(f"{name} v{version}: artifacts at {uri} are not a local folder")
        return local
    import mlflow

    local = paths.root / STAGING / "model-downloads" / f"v{version}"
    if not local.is_dir():
        tmp = local.with_name(f".v{version}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
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
    target = paths.root / STAGING / "models" / "registry.json"
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
        "unreplicated_partitions": len({str(Path(s.rel).parent) for s in pending if "day=" in s.rel}),
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


# ---------------------------------------------------------------- model registry replica


class ReplicaRegistryClient:
    """The subset of MlflowClient the serving layer uses, answered from a registry replica."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _doc(self) -> dict:
        return orjson.loads((self.root / "models" / "registry.json").read_bytes())

    def get_model_version_by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        doc = self._doc()
        if doc["name"] != name or alias not in doc["aliases"]:
            raise MlflowException(f"alias {alias!r} of {name} not found in the replica")
        return _Version(str(doc["aliases"][alias]))

    def model_dir(self, version: int) -> Path:
        return self.root / "models" / f"v{version}"


@dataclass(frozen=True)
class _Version:
    version: str


def load_replica_booster(root: Path, version: int):
    import lightgbm

    path = ReplicaRegistryClient(root).model_dir(version)
    found = sorted(path.rglob("*.lgb"))
    if not found:
        raise FailoverError(f"{path}: the replica has no LightGBM model file for v{version}")
    return lightgbm.Booster(model_file=str(found[0]))


# ---------------------------------------------------------------- health


@dataclass
class Probe:
    region: str
    ok: bool
    problems: list[str]
    heartbeat_age_s: float | None


def probe(
    topology: Topology, home: Path, region: str, open_store: Callable[[RegionPaths], object] | None = None
) -> Probe:
    """Is R's own site up? Its root is reachable and writable (heartbeat), its store answers."""
    paths = primary_paths(topology, home, region)
    problems: list[str] = []
    beat = paths.root / HEARTBEAT
    age = None
    try:
        previous = orjson.loads(beat.read_bytes())["at"]
        age = max(0.0, time.time() - previous)
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        pass
    if not paths.root.is_dir():
        problems.append(f"storage root {paths.root} is unreachable")
    else:
        try:
            write_bytes_atomic(orjson.dumps({"at": time.time(), "pid": os.getpid()}), beat)
        except OSError as error:
            problems.append(f"storage root {paths.root} is not writable: {error}")
        if open_store is not None:
            try:
                store = open_store(paths)
                store.ping()
                store.close()
            except Exception as error:
                problems.append(f"online store: {error}")
    return Probe(region, not problems, problems, age)


# ---------------------------------------------------------------- failover / failback


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

    def as_dict(self) -> dict:
        return asdict(self)


def fail_over(
    topology: Topology, home: Path, region: str, reason: str, *, by: str = "manual"
) -> FailoverReport:
    """Promote R's DR region for R: check out every replica into R's failover root, then switch."""
    started = time.perf_counter()
    dr = topology.dr_region(region)
    state = load_state(home)
    if state.get(region, {}).get("state") == "failed_over":
        raise FailoverError(f"{region} is already failed over to {state[region]['serving_region']}")
    replicas = {cls: replica(topology, home, region, cls) for cls in topology.replication.classes}
    empty = [cls for cls, rep in replicas.items() if rep.current_version() is None]
    if "model_registry" in empty or "online_store" in empty:
        raise FailoverError(
            f"{dr.name} cannot serve {region}: no replica of {', '.join(sorted(empty))} "
            "(materialize the replica assets first)"
        )
    missing = {cls: rep.missing() for cls, rep in replicas.items() if rep.current_version() is not None}
    missing = {cls: m for cls, m in missing.items() if m}
    if missing:
        raise FailoverError(f"{dr.name}'s replicas of {region} lack files: {missing}; re-run replication")
    target = failover_root(topology, home, region)
    staging = target.with_name(f".{region}.checkout")
    shutil.rmtree(staging, ignore_errors=True)
    files = sum(rep.checkout(staging) for rep in replicas.values() if rep.current_version() is not None)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    doc = orjson.loads((target / "models" / "registry.json").read_bytes())
    if "champion" not in doc["aliases"]:
        raise FailoverError(f"the registry replica of {region} has no champion")
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
    _save_state(home, state)
    report.seconds = time.perf_counter() - started
    return report


def _merge_parquet(primary: Path, failover: Path, primary_site: str, dr_site: str) -> pl.DataFrame:
    """Rows of both versions of one partition; on a key both hold, the conflict rule decides.

    Lake rows carry no HLC: the order is (event time, site), the site breaking ties the
    same way on every run (the DR site's row wins a tie: it is the newer write of the two).
    """
    a = pl.read_parquet(primary).with_columns(_site=pl.lit(primary_site), _rank=pl.lit(0))
    b = pl.read_parquet(failover).with_columns(_site=pl.lit(dr_site), _rank=pl.lit(1))
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


def fail_back(
    topology: Topology,
    home: Path,
    region: str,
    *,
    open_store: Callable[[RegionPaths], object] | None = None,
    drain_seconds: float = 5.0,
) -> FailoverReport:
    """Serve R from R again, then reconcile what R's DR site wrote into R's own root.

    `drain_seconds` must exceed the serving layer's poll interval: pushes and log lines a
    service writes at the DR site until it notices the switch are merged, not lost.
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
    _save_state(home, state)
    time.sleep(drain_seconds)
    # Files written at the DR site during the failover (lake and stream): back to the primary.
    for cls, spec in topology.replication.classes.items():
        if cls in ("online_store", "model_registry", "deployment_config"):
            continue
        for source in walk(site, spec.paths):
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
    # Online rows: last-writer-wins on (event time, HLC, site), stamps kept both ways.
    from meridian.online_store import SqliteOnlineStore

    dr_store = SqliteOnlineStore(site / "online" / "online_store.db", origin=dr_name)
    primary_store = (
        open_store(primary)
        if open_store
        else SqliteOnlineStore(primary.root / "online" / "online_store.db", origin=region)
    )
    for view in feature_views():
        reconciled["online_rows"] += primary_store.write(dr_store.iter_rows(view.name)).applied
    dr_store.close()
    primary_store.close()
    shutil.rmtree(site, ignore_errors=True)
    return FailoverReport(
        region,
        region,
        "failback",
        time.perf_counter() - started,
        {cls: rep.current_version() for cls, rep in replicas.items()},
        {cls: (rep.manifest() or {}).get("published_at") for cls, rep in replicas.items()},
        reconciled=reconciled,
        rpo_partitions=len({str(Path(r).parent) for r in lost if "day=" in r}),
        rpo_files=sorted(lost),
    )


# ---------------------------------------------------------------- synchronous classes


def sync_write_deployment(topology: Topology, home: Path, region: str, save: Callable[[Path], Path]) -> Path:
    """Write a deployment config to the DR replica first, then to the region: both, or neither visible.

    `save(root)` writes `root/deployment/config.json` (meridian.deployment.save). The DR
    copy is published (manifest + CURRENT) before the primary file is replaced; if the
    DR write fails the primary keeps its previous config and the caller reports failure.
    """
    paths = active_paths(topology, home, region)
    staged_root = paths.root / STAGING / "deployment-next"
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


def sync_model_registry(topology: Topology, home: Path, region: str, client) -> ClassReplication:
    """After an alias moved: publish the registry state and the aliased models' files to DR.

    The manifest lists the model files and registry.json together and is published
    atomically, so the DR region never holds an alias to a model whose files it lacks.
    """
    return replicate_class(topology, home, region, "model_registry", client=client)
