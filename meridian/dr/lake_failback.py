"""Failback of the lake's Delta tables: the DR site's commits re-applied on the primary as new commits.

At failover the DR site checks out the region's replica: each Delta table as it was at the
replica's version V. While failed over, the DR site commits V+1, V+2, ... on its copy; the
primary may hold commits after V of its own that never reached the replica (the RPO). Copying
the DR site's files back would put two different commits under one version name, so instead:
for each partition the DR site's commits after V touched (read from its log), both sides'
rows are merged by the conflict rule (meridian.dr.failover.merge_rows) and the merge replaces
the partition on the primary in one commit. The primary's log only ever grows.

A region whose lake is on object storage is served, while failed over, from its replica in the
DR region's bucket in place (no copy: the failover takes no time proportional to the lake). At
failback the same merge runs from that replica, then the replica is rewound to V (the DR
site's commits removed, newest first) and replication brings the primary's commits over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from meridian.dr.probes import LAKE_PROBE_DEADLINE_S
from meridian.dr.state import FailoverError, primary_paths
from meridian.lake_tables import DELTA_TABLES, LakeLocation
from meridian.topology import Topology

_LOG_ENTRY = re.compile(r"^lake/(?P<table>[a-z_]+)/_delta_log/(?P<version>\d{20})\.json$")


def delta_table_of(rel: str) -> str | None:
    """The Delta table a path under a region's root belongs to (`lake/<table>/...`), or None."""
    parts = rel.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "lake" and parts[1] in DELTA_TABLES else None


def partition_of(rel: str) -> str:
    """The day partition a lake file belongs to: `lake/<table>/day=<d>` (origin folders folded in)."""
    parts = rel.split("/")
    for index, part in enumerate(parts):
        if part.startswith("day="):
            return "/".join(parts[: index + 1])
    return str(Path(rel).parent)


def checkout_versions(files: Iterable[str]) -> dict[str, int]:
    """The version of each Delta table in a replica manifest's files: its newest log entry."""
    versions: dict[str, int] = {}
    for rel in files:
        if match := _LOG_ENTRY.match(rel):
            versions[match["table"]] = max(versions.get(match["table"], -1), int(match["version"]))
    return versions


def merge_back(
    primary: LakeLocation,
    site: LakeLocation,
    tables: Iterable[str],
    checked_out: dict[str, int],
    merge: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame],
) -> int:
    """Re-apply on the primary each partition the DR site's commits changed; returns partitions merged.

    `site` is the DR site's copy: a checkout folder (a lake on local disk) or the replica in the
    DR region's bucket, written in place while failed over (a lake on object storage)."""
    merged = 0
    for name in tables:
        theirs_table = site.table(name)
        latest = theirs_table.version()
        since = checked_out.get(name, -1)
        if latest is None or latest <= since:
            continue
        changed = theirs_table.changed_partitions(since, latest)
        if changed is None:  # not told by the log: every partition the DR site holds
            changed = theirs_table.partitions()
        ours_table = primary.table(name)
        for partition in changed:
            theirs = theirs_table.read(where=partition)
            ours = ours_table.read(where=partition)
            theirs = theirs.drop(theirs_table.partition_by) if theirs is not None else None
            ours = ours.drop(ours_table.partition_by) if ours is not None else None
            if theirs is None or theirs.is_empty():
                continue  # the DR site emptied nothing the primary should lose
            rows = merge(ours, theirs) if ours is not None and not ours.is_empty() else theirs
            ours_table.replace(rows, **partition)
            merged += 1
    return merged


# ---- a lake on object storage: the replica in the DR bucket served the region in place


def unreplicated_partitions(primary: LakeLocation, checked_out: dict[str, int | None]) -> list[str]:
    """The primary's partitions that commits after the replica's version changed: what the
    failover could not serve (the RPO), as `lake/<table>/day=<d>/...` paths."""
    lost = []
    for name, since in checked_out.items():
        table = primary.table(name)
        latest = table.version()
        start = -1 if since is None else since
        if latest is None or latest <= start:
            continue
        changed = table.changed_partitions(start, latest) or table.partitions()
        lost.extend("/".join(["lake", name, *(f"{c}={p[c]}" for c in table.partition_by)]) for p in changed)
    return sorted(lost)


def check_primary_holds(
    primary: LakeLocation, replica: LakeLocation, checked_out: dict[str, int | None]
) -> list[str]:
    """What the primary lacks of the commits the replica held at the failover: each table's log
    entry at the checked-out version must be there, byte for byte (same MD5). Another or an
    emptied bucket fails this; failing back onto it would lose the region's history."""
    from meridian.lake_replication import LOG_DIR

    problems = []
    for name, version in checked_out.items():
        if version is None:
            continue
        key = f"{name}/{LOG_DIR}/{version:020d}.json"
        heads = []
        for side in (primary, replica):
            try:
                head = side.client.head_object(Bucket=side.s3.bucket, Key=side.s3.key(key))
                heads.append(head["ETag"])
            except Exception as error:  # botocore ClientError (404), or the endpoint is down
                heads.append(None)
                if side is primary:
                    problems.append(f"{name}: no version {version} ({type(error).__name__})")
        if heads[0] is not None and heads[1] is not None and heads[0] != heads[1]:
            problems.append(f"{name}: version {version} differs from the replica's")
    return problems


def object_store_lake_replica(
    topology: Topology, home: Path, region: str
) -> tuple[str | None, dict[str, int | None]]:
    """R's lake on object storage: the URL of its replica in the DR bucket (what serves R's lake
    while failed over, in place) and each table's version there. (None, {}) for a local lake."""
    from meridian.lake_replication import replica_location

    if primary_paths(topology, home, region).lake_url is None:
        return None, {}
    dr_name = topology.dr_region(region).name
    try:
        s3 = replica_location(primary_paths(topology, home, dr_name), region)
        url, replica = s3.url, LakeLocation.on_object_store(s3).with_deadline(LAKE_PROBE_DEADLINE_S)
        versions = {name: replica.table(name).version() for name in sorted(DELTA_TABLES)}
    except Exception as error:  # no DR bucket configured, its endpoint down, credentials refused
        raise FailoverError(f"{dr_name} cannot serve {region}'s lake from its bucket: {error}") from error
    if versions.get("raw_transactions") is None:
        raise FailoverError(
            f"{dr_name} cannot serve {region}: no replica of its lake at {url} (materialize raw_lake_replica first)"
        )
    return url, versions


def reseed_lake_replica(
    topology: Topology, primary: LakeLocation, replica: LakeLocation, versions: dict[str, int | None]
) -> int:
    """The replica after the merge: the DR site's commits removed (they are on the primary now,
    as new commits), then brought up to the primary's log by replication. Entries removed."""
    from meridian.governance import default_policy
    from meridian.lake_replication import replicate_table, rewind_replica

    rewound = 0
    for name, version in sorted(versions.items()):
        rewound += rewind_replica(replica.s3, name, version)
        if primary.table(name).version() is not None:
            replicate_table(primary.s3, replica.s3, name, topology, default_policy())
    return rewound
