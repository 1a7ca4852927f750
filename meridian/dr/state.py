"""The control plane's failover state, and where each region's data lives because of it.

State: `$MERIDIAN_HOME/platform/failover.json`, replaced atomically. While region R is
failed over to its DR region D, `active_paths(R)` is `<D root>/failover/<R>` (a checkout
of the replicas), so R's assets run and R's traffic is served in D without any asset
code knowing.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths, region_paths
from meridian.replication import Replica
from meridian.topology import Topology

STAGING = ".replication"  # under the region root: snapshots taken for a replication run


HEARTBEAT = "heartbeat.json"


class FailoverError(RuntimeError):
    """A failover or failback cannot proceed; the message says what is missing."""


def state_path(home: Path) -> Path:
    return home / "platform" / "failover.json"


def load_state(home: Path) -> dict[str, dict]:
    try:
        return orjson.loads(state_path(home).read_bytes())
    except FileNotFoundError:
        return {}


def save_state(home: Path, state: dict[str, dict]) -> None:
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
        return RegionPaths(
            region,
            failover_root(topology, home, region),
            site=entry["serving_region"],
            lake_url=entry.get("lake_url"),  # a lake on object storage: its replica in the DR bucket
        )
    return primary_paths(topology, home, region)


def replica(topology: Topology, home: Path, region: str, cls: str) -> Replica:
    dr = topology.dr_region(region)
    return Replica(primary_paths(topology, home, dr.name).root / "replicas" / region / cls)
