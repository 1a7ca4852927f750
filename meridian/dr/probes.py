"""Health probes of a region's site: what the health sensor decides a failover on."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from meridian.dr.provisioning import storage_problem
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
    topology: Topology, home: Path, region: str, open_store: Callable[..., object] | None = None
) -> Probe:
    """Is R's own site up? What it serves and builds from, not only its folder:

    - the root is the provisioned volume (its marker, meridian.dr.provisioning) and takes a
      heartbeat write;
    - the newest partition of every lake table is readable (its Parquet footer);
    - the warehouse is a DuckDB file (its header: opening it would contend with dbt's lock);
    - the online store answers a real lookup (`probe`: a fresh read of the table's rows).
    """
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
    elif problem := storage_problem(home, paths):
        problems.append(problem)
    else:
        try:
            write_bytes_atomic(orjson.dumps({"at": time.time(), "pid": os.getpid()}), beat)
        except OSError as error:
            problems.append(f"storage root {paths.root} is not writable: {error}")
        problems.extend(_lake_problems(paths))
        problems.extend(_warehouse_problems(paths))
        if open_store is not None:
            try:
                store = open_store(paths, create=False)
                try:
                    store.probe()  # a keyed lookup on a fresh connection
                finally:
                    store.close()
            except Exception as error:
                problems.append(f"online store: {error}")
    return Probe(region, not problems, problems, age)


# What asking a region's object store may cost a probe: a frozen endpoint is an outage within
# this, never a health tick held for delta-rs' default 3 minutes of retries.
LAKE_PROBE_DEADLINE_S = 3.0


def probe_all(
    topology: Topology, home: Path, regions: list[str], open_store: Callable[..., object] | None = None
) -> dict[str, Probe]:
    """`regions` probed at once: a frozen site costs the tick its own probe's deadline, and
    never delays another region's verdict behind it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(regions)), thread_name_prefix="probe") as pool:
        futures = {region: pool.submit(probe, topology, home, region, open_store) for region in regions}
        return {region: future.result() for region, future in futures.items()}


DUCKDB_MAGIC = b"DUCK"  # bytes 8..12 of every DuckDB database file


def _lake_problems(paths: RegionPaths) -> list[str]:
    """The newest partition of each lake table must be a readable Parquet file."""
    import pyarrow.parquet as pq

    problems = []
    if paths.lake_url is not None and paths.host == paths.region:  # the lake's tables on object storage
        from meridian.lake_tables import DELTA_TABLES

        location = paths.lake_location.with_deadline(LAKE_PROBE_DEADLINE_S)
        for name in sorted(DELTA_TABLES):
            try:
                location.table(name).version()
            except Exception as error:  # an endpoint down or frozen, credentials refused, a torn log
                problems.append(f"lake table {name} on {paths.lake_url} is unreachable: {error}"[:300])
                break
    if not paths.lake.is_dir():
        missing = (
            paths.warehouse.exists() and paths.lake_url is None
        )  # (on object storage: no local lake yet)
        return problems + ([f"lake {paths.lake} is missing"] if missing else [])
    for table in sorted(p for p in paths.lake.iterdir() if p.is_dir()):
        if (table / "_delta_log").is_dir():  # a Delta table: its log must open
            try:
                paths.lake_location.table(table.name).version()
            except Exception as error:  # delta-rs raises its own errors for a broken log
                problems.append(f"lake table {table.name} is unreadable (its Delta log: {error})"[:300])
            continue
        days = sorted(table.glob("day=*"))
        files = sorted(days[-1].glob("*.parquet")) if days else []
        for file in files:
            try:
                pq.read_metadata(file)
            except (OSError, ValueError) as error:
                problems.append(
                    f"lake table {table.name} is unreadable ({file.name} of {days[-1].name}: {error})"
                )
                break
    return problems


def _warehouse_problems(paths: RegionPaths) -> list[str]:
    if not paths.warehouse.exists():
        return []
    try:
        with paths.warehouse.open("rb") as f:
            header = f.read(12)
    except OSError as error:
        return [f"warehouse {paths.warehouse} cannot be read: {error}"]
    if header[8:12] != DUCKDB_MAGIC:
        return [f"warehouse {paths.warehouse} is not a DuckDB database (corrupt header)"]
    return []
