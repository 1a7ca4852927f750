"""A region's storage identity: only provisioning creates a region's root.

Provisioning writes a marker into the root (`.meridian-region.json`: region, a random id,
when) and records the same id in the control plane (`$MERIDIAN_HOME/platform/
provisioned/<region>.json`). From then on a root is the region's storage only if its
marker carries the recorded id:

- a run for a region whose root is gone, or is an empty or replaced volume, fails with
  `RegionStorageUnavailable` before it writes anything, instead of recreating an empty
  root that a probe would then call healthy;
- the health probe reports such a root as down;
- failback refuses to switch serving back to it.

A region never provisioned (the embedded default's first `meridian run`) is adopted once
its first write made its root; a root that predates markers is adopted the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path

import orjson

from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths
from meridian.roots import RegionStorageUnavailable, guard, release

MARKER = ".meridian-region.json"


def record_path(home: Path, region: str) -> Path:
    return home / "platform" / "provisioned" / f"{region}.json"


def read_record(home: Path, region: str) -> dict | None:
    try:
        return orjson.loads(record_path(home, region).read_bytes())
    except FileNotFoundError:
        return None


def read_marker(root: Path) -> dict | None:
    try:
        return orjson.loads((root / MARKER).read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None


def storage_problem(home: Path, paths: RegionPaths) -> str | None:
    """Why `paths.root` is not the region's provisioned storage, or None when it is (or when
    the region was never provisioned: there is nothing to lose yet)."""
    record = read_record(home, paths.region)
    if record is None:
        return None
    if not paths.root.is_dir():
        return f"storage root {paths.root} of {paths.region} is unreachable"
    marker = read_marker(paths.root)
    if marker is None:
        return (
            f"storage root {paths.root} of {paths.region} is not the provisioned volume: "
            f"its marker {MARKER} is missing (an empty or replaced volume; provisioned "
            f"{record['provisioned_at']})"
        )
    if marker.get("id") != record["id"] or marker.get("region") != paths.region:
        return (
            f"storage root {paths.root} holds another volume (marker of {marker.get('region')!r} "
            f"id {marker.get('id')}, expected {paths.region!r} id {record['id']})"
        )
    return None


def provision(home: Path, paths: RegionPaths) -> dict:
    """Create the region's root and its identity (idempotent; safe against a concurrent
    provisioner: the marker is created exclusively, the loser adopts the winner's)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    marker = {
        "region": paths.region,
        "id": uuid.uuid4().hex,
        "root": str(paths.root),
        "provisioned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with contextlib.suppress(FileExistsError):
        fd = os.open(paths.root / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(marker))
            out.flush()
            os.fsync(out.fileno())
    marker = read_marker(paths.root) or marker
    write_bytes_atomic(orjson.dumps(marker), record_path(home, paths.region))
    return marker


def ensure_provisioned(home: Path, paths: RegionPaths) -> RegionPaths:
    """The region's primary root; raise if it was provisioned and is now lost or replaced.

    A region never provisioned is adopted once its root exists (its first write created it);
    resolving it creates nothing, so read-only consumers (platform health, the catalog) never
    make roots for regions nobody has run.
    """
    if read_record(home, paths.region) is None:
        release(paths.root)  # nothing was provisioned here: a writer may make the root
        if paths.root.is_dir():
            provision(home, paths)
            guard(paths.root, MARKER)
        return paths
    if problem := storage_problem(home, paths):
        raise RegionStorageUnavailable(
            f"{problem}. No run writes there until it is restored; fail the region over to its "
            "DR region (`meridian failover --region ...`) or restore its storage"
        )
    guard(paths.root, MARKER)  # from here, no writer of this process recreates it
    return paths


def site_down(topology, home: Path, region: str) -> str | None:
    """Why no run should start for `region` now (its own storage is lost and it is not failed
    over), else None. Sensors skip such a region instead of launching runs that would fail."""
    from meridian.dr.state import active_paths

    paths = active_paths(topology, home, region)
    return storage_problem(home, paths) if paths.host == region else None
