"""Health probes of a region's site: what the health sensor decides a failover on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from meridian.dr.state import HEARTBEAT, primary_paths
from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths
from meridian.topology import Topology


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
