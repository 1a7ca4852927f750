"""Where the embedded default writes: everything lives under MERIDIAN_HOME."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meridian.topology import Region

REPO_ROOT = Path(__file__).resolve().parent.parent


def meridian_home() -> Path:
    """The data root: $MERIDIAN_HOME, or `.meridian/` in the checkout (meridian.settings)."""
    from meridian.settings import settings

    return settings().home


@dataclass(frozen=True)
class RegionPaths:
    """The folders one region owns. No run for region R writes outside R's root."""

    region: str
    root: Path
    # The region whose infrastructure hosts `root`: the region itself, or its DR region
    # while it is failed over (meridian.failover). Writes are stamped with it.
    site: str = ""

    @property
    def host(self) -> str:
        return self.site or self.region

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def warehouse_lock(self) -> Path:
        """Held by whoever writes the warehouse (see meridian.locks)."""
        return self.root / "warehouse.lock"

    def table(self, name: str) -> Path:
        return self.lake / name

    def day_partition(self, table: str, day: str) -> Path:
        return self.table(table) / f"day={day}"


def region_paths(region: Region, home: Path | None = None) -> RegionPaths:
    root = Path(region.storage_root)
    if "://" in region.storage_root:
        raise ValueError(
            f"region {region.name}: storage_root {region.storage_root!r} is an object-store URL; "
            "the embedded default needs a local path"
        )
    if not root.is_absolute():
        root = (home or meridian_home()) / root
    return RegionPaths(region=region.name, root=root.resolve())
