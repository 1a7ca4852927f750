"""Parquet lake I/O: one file per table partition, replaced atomically.

A partition is written to a hidden temporary file in the same folder, fsynced, then
renamed over the old file. A run that dies midway leaves the previous version (or
nothing) in place, never half a file; readers glob `*.parquet` and never see the
temporary name.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq

from meridian.faults import failpoint
from meridian.roots import make_dirs

PARTITION_FILE = "data.parquet"
# A temporary file of a dead writer older than this is removed even when its owner cannot be
# checked (written on another host, or before names carried their owner): no write of
# Meridian's takes hours between creating its temporary file and renaming it.
ORPHAN_AGE_S = 6 * 3600.0
_OWNED = re.compile(r"\.(?P<host>[^.~]+)~(?P<pid>[0-9]+)~[0-9a-f]{32}\.tmp$")


def _host() -> str:
    """This host's name as it appears in temporary names (no dots, tildes or slashes)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def temporary_name(directory: Path, name: str) -> Path:
    """A hidden temporary name in `directory` that says who writes it (host and process)."""
    return directory / f".{name}.{_host()}~{os.getpid()}~{uuid.uuid4().hex}.tmp"


def _orphaned(path: Path, now: float, here: str) -> bool:
    from meridian.locks import pid_alive

    owned = _OWNED.search(path.name)
    if owned and owned["host"] == here:
        return not pid_alive(int(owned["pid"]))  # its writer is gone: it will never be renamed
    try:
        return now - path.stat().st_mtime > ORPHAN_AGE_S
    except FileNotFoundError:
        return False  # renamed into place meanwhile


def sweep_temporaries(root: Path) -> list[Path]:
    """Remove what dead writers left under `root`: hidden `*.tmp` files no live writer owns.

    A file whose name carries a writer on this host is removed when that process is gone;
    any other temporary file only when it is older than ORPHAN_AGE_S. Returns what was removed.
    """
    if not root.is_dir():
        return []
    here = _host()
    now = time.time()
    removed = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                path = Path(dirpath) / name
                if _orphaned(path, now, here):
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside `path`; on success it is fsynced and renamed over `path`."""
    make_dirs(path.parent)
    tmp = temporary_name(path.parent, path.name)
    try:
        yield tmp
        failpoint("lake.temporary_written")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> int:
    """Write `frame` to `path` atomically; return the bytes written."""
    with atomic_target(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
    return path.stat().st_size


def write_bytes_atomic(payload: bytes, path: Path) -> None:
    """Write a small file (a manifest, a registry entry) atomically."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(payload)


def parquet_row_count(path: Path) -> int:
    """Rows in a Parquet file from its footer, without reading the data."""
    return pq.ParquetFile(path).metadata.num_rows


def verify_readable(path: Path, name: str) -> str | None:
    """Why the file at `path` (named `name` at the source) cannot be read as what it is, or None.

    Parquet: both magic numbers, a footer that parses and a row count the row groups agree
    with. JSON: it parses (JSON lines: every complete line does). SQLite and DuckDB: their
    header. Other kinds are taken as bytes.
    """
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            with open(path, "rb") as handle:
                head = handle.read(4)
                handle.seek(-4, os.SEEK_END)
                tail = handle.read(4)
            if head != b"PAR1" or tail != b"PAR1":
                return "not a complete Parquet file (magic number missing: truncated?)"
            meta = pq.read_metadata(path)
            if meta.num_rows != sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups)):
                return "Parquet footer row count disagrees with its row groups"
        elif name.endswith(".json") and "_delta_log" in (Path(name).parent.name, path.parent.name):
            for line in path.read_bytes().splitlines():  # a Delta commit: one JSON action a line
                if line.strip():
                    orjson.loads(line)
        elif name.endswith(".json"):
            orjson.loads(path.read_bytes())
        elif name.endswith(".db"):
            with open(path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    return "not an SQLite database (header)"
        elif name.endswith(".duckdb"):
            with open(path, "rb") as handle:
                handle.seek(8)
                if handle.read(4) != b"DUCK":
                    return "not a DuckDB database (header)"
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        return f"{type(error).__name__}: {error}"
    return None


def set_aside_unreadable(lake: Path) -> list[tuple[Path, str]]:
    """Rename aside every Parquet file of the lake that cannot be read; (new path, why) of each.

    Every reader of the lake globs `day=*/*.parquet`, so one truncated file (a storage
    fault) would fail every build of the region. Set aside as `<name>.unreadable-<utc>`
    (outside every glob, kept for inspection) it costs only its own partition, which a
    re-run of that partition's ingestion writes again.
    """
    found: list[tuple[Path, str]] = []
    if not lake.is_dir():
        return found
    for path in sorted(lake.glob("*/day=*/*.parquet")):
        if (path.parent.parent / "_delta_log").is_dir():
            continue  # a Delta table's files are its log's: never renamed behind its back
        problem = verify_readable(path, path.name)
        if problem is not None:
            found.append((set_aside(path), problem))
    return found


def set_aside(path: Path) -> Path:
    """Rename an unreadable file to `<name>.unreadable-<utc>`: outside every glob of the lake,
    kept for inspection. Returns the new path."""
    aside = path.with_name(f"{path.name}.unreadable-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
    path.rename(aside)
    return aside


def partition_file(table_dir: Path, day: str) -> Path:
    return table_dir / f"day={day}" / PARTITION_FILE
