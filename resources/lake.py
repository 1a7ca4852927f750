"""Regional lake storage: one folder per region under MERIDIAN_HOME (embedded default).

The production profile points storage roots at object storage; the interface (paths
per region, atomic partition writes) stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from meridian.global_store import GlobalStore
from meridian.lake import parquet_row_count, partition_file, write_parquet_atomic
from meridian.lake_tables import DELTA_TABLES
from meridian.paths import RegionPaths, meridian_home, region_paths
from meridian.topology import Topology


@dataclass(frozen=True)
class PartitionWrite:
    path: Path
    rows: int
    bytes: int
    version: int | None = None  # the Delta table's version the write committed


class RegionalLakeResource(dg.ConfigurableResource):
    """Parquet lake and DuckDB warehouse locations for every region."""

    home: str | None = Field(default=None, description="Data root; default $MERIDIAN_HOME or .meridian/")

    def root(self) -> Path:
        return Path(self.home).resolve() if self.home else meridian_home()

    def paths(self, topology: Topology, region: str) -> RegionPaths:
        """Where `region`'s data lives now: its own root, or its DR site while failed over.

        A primary root is provisioned on first use; a run for a region whose storage was lost
        or replaced fails here (RegionStorageUnavailable) before it writes anything.
        """
        from meridian.dr.provisioning import ensure_provisioned
        from meridian.dr.state import active_paths

        paths = active_paths(topology, self.root(), region)
        if paths.host == region:
            ensure_provisioned(self.root(), paths)
        return paths

    def global_store(self, topology: Topology) -> GlobalStore:
        """Where the global services publish (the data root, or the platform's bucket)."""
        return GlobalStore.of(topology, self.root())

    def primary_paths(self, topology: Topology, region: str) -> RegionPaths:
        return region_paths(topology.region(region), self.root())

    def write_partition(
        self, paths: RegionPaths, table: str, day: str, frame: pl.DataFrame, origin: str = "source"
    ) -> PartitionWrite:
        """Replace one day of `table` in the region's lake atomically, and read back its row count.

        A Delta table (DELTA_TABLES) gets one commit replacing the day (and, where the table
        has origins, only `origin`'s share of it); any other table one Parquet file per day.
        """
        if table in DELTA_TABLES:
            return self.write_partitions(paths, table, {day: frame}, origin)[day]
        path = partition_file(paths.table(table), day)
        size = write_parquet_atomic(frame, path)
        return PartitionWrite(path=path, rows=parquet_row_count(path), bytes=size)

    def write_partitions(
        self, paths: RegionPaths, table: str, frames: dict[str, pl.DataFrame], origin: str = "source"
    ) -> dict[str, PartitionWrite]:
        """Replace several days of `table` (day -> frame): a Delta table in one commit, every day
        or none (a backfill's days cost one commit, not one each: on object storage a commit is
        a dozen requests); any other table a file per day. Rows and bytes per day are read
        back from the commit."""
        if table not in DELTA_TABLES:
            return {
                day: self.write_partition(paths, table, day, frame, origin) for day, frame in frames.items()
            }
        lake_table = paths.lake_table(table)
        with_origin = "origin" in lake_table.partition_by
        commit = lake_table.replace_partitions(
            [({"day": day, **({"origin": origin} if with_origin else {})}, f) for day, f in frames.items()]
        )
        out = {}
        for day in frames:
            key = (day, origin) if with_origin else (day,)
            out[day] = PartitionWrite(
                path=paths.table(table),
                rows=commit.partition_rows.get(key, 0),
                bytes=commit.partition_bytes.get(key, 0),
                version=commit.version,
            )
        return out
