"""Only provisioning creates a region's root: a writer in flight never recreates a lost one."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from meridian.dr.provisioning import ensure_provisioned
from meridian.lake import partition_file, write_parquet_atomic
from meridian.locks import file_lock
from meridian.paths import region_paths
from meridian.roots import RegionStorageUnavailable
from meridian.stream_log import StreamLogWriter, stream_dir


def test_a_writer_that_resolved_its_paths_before_the_fault_never_recreates_the_root(tmp_path, topology):
    """Before: write_parquet_atomic (and the lock and the stream log) made every missing
    parent, so a run that resolved its paths before the storage failed recreated an empty
    root, which the probe then called healthy."""
    home = tmp_path / "home"
    paths = region_paths(topology.region("eu-west"), home)
    frame = pl.DataFrame({"transaction_id": ["t1"]})
    write_parquet_atomic(frame, partition_file(paths.table("raw_transactions"), "2026-01-01"))
    ensure_provisioned(home, paths)  # adopted: marker and record; the root is guarded from now on
    write_parquet_atomic(frame, partition_file(paths.table("raw_labels"), "2026-01-01"))  # new folders below

    shutil.rmtree(paths.root)  # the storage fails while the writers hold their paths
    with pytest.raises(RegionStorageUnavailable, match="is gone"):
        write_parquet_atomic(frame, partition_file(paths.table("raw_transactions"), "2026-01-02"))
    with pytest.raises(RegionStorageUnavailable), file_lock(paths.warehouse_lock):
        pass
    with pytest.raises(RegionStorageUnavailable):
        StreamLogWriter(stream_dir(paths.root))
    assert not paths.root.exists()

    paths.root.mkdir()  # an empty volume mounted in its place
    with pytest.raises(RegionStorageUnavailable, match="lost its marker"):
        write_parquet_atomic(frame, partition_file(paths.table("raw_transactions"), "2026-01-02"))
    assert list(paths.root.iterdir()) == []

    # A new home at the same path (no provisioning record): the first write makes the root.
    shutil.rmtree(home)
    ensure_provisioned(home, paths)
    write_parquet_atomic(frame, partition_file(paths.table("raw_transactions"), "2026-01-01"))
    assert paths.root.is_dir()
