"""Failback of the lake's Delta tables: the DR site's commits re-applied on the primary as new commits.

At failover the DR site checks out the region's replica: each Delta table as it was at the
replica's version V. While failed over, the DR site commits V+1, V+2, ... on its copy; the
primary may hold commits after V of its own that never reached the replica (the RPO). Copying
the DR site's files back would put two different commits under one version name, so instead:
for each partition the DR site's commits after V touched (read from its log), both sides'
rows are merged by the conflict rule (meridian.dr.failover.merge_rows) and the merge replaces
the partition on the primary in one commit. The primary's log only ever grows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl

from meridian.lake_tables import DELTA_TABLES, LakeLocation

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
    primary_lake: Path,
    site_lake: Path,
    tables: Iterable[str],
    checked_out: dict[str, int],
    merge: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame],
) -> int:
    """Re-apply on the primary each partition the DR site's commits changed; returns partitions merged."""
    merged = 0
    for name in tables:
        site = LakeLocation.local(site_lake).table(name)
        latest = site.version()
        since = checked_out.get(name, -1)
        if latest is None or latest <= since:
            continue
        changed = site.changed_partitions(since, latest)
        if changed is None:  # not told by the log: every partition the DR site holds
            changed = site.partitions()
        primary = LakeLocation.local(primary_lake).table(name)
        for partition in changed:
            theirs = site.read(where=partition)
            ours = primary.read(where=partition)
            theirs = theirs.drop(site.partition_by) if theirs is not None else None
            ours = ours.drop(primary.partition_by) if ours is not None else None
            if theirs is None or theirs.is_empty():
                continue  # the DR site emptied nothing the primary should lose
            rows = merge(ours, theirs) if ours is not None and not ours.is_empty() else theirs
            primary.replace(rows, **partition)
            merged += 1
    return merged
