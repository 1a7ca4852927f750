"""Parquet lake I/O: one file per table partition, replaced atomically.

A partition is written to a hidden temporary file in the same folder, fsynced, then
renamed over the old file. A run that dies midway leaves the previous version (or
nothing) in place, never half a file; readers glob `*.parquet` and never see the
temporary name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

PARTITION_FILE = "data.parquet"


@contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """A hidden temporary name beside `path`; on success it is fsynced and renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> int:
    """Write `frame` to `path` atomically; return the bytes written."""
    with _atomic_target(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
    return path.stat().st_size


def write_bytes_atomic(payload: bytes, path: Path) -> None:
    """Write a small file (a manifest, a registry entry) atomically."""
    with _atomic_target(path) as tmp:
        tmp.write_bytes(payload)


def parquet_row_count(path: Path) -> int:
    """Rows in a Parquet file from its footer, without reading the data."""
    return pq.ParquetFile(path).metadata.num_rows


def partition_file(table_dir: Path, day: str) -> Path:
    return table_dir / f"day={day}" / PARTITION_FILE
