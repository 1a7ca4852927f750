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
    # Where the lake's Delta tables live when the region's storage root is on object
    # storage (`s3://bucket/prefix/lake`); then `root` is the region's local working folder
    # (warehouse, online snapshot, stream log, the Parquet tables).
    lake_url: str | None = None

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

    @property
    def lake_location(self):
        """The region's lake as Delta tables see it (meridian.lake_tables): its folder, or its
        bucket reached through the region's own endpoint and credentials (meridian.object_store)."""
        import os

        from meridian.lake_tables import LakeLocation
        from meridian.object_store import region_location

        if self.lake_url is None:
            return LakeLocation.local(self.lake)
        # While failed over, `lake_url` is R's replica in its DR region's bucket (replica_lake_url),
        # reached through the DR site's endpoint with its credentials: same zone, never another.
        purpose = (
            f"{self.region}'s lake is on object storage ({self.lake_url})"
            if self.host == self.region
            else f"{self.region} is failed over to {self.host}, whose bucket serves its lake ({self.lake_url})"
        )
        return LakeLocation.on_object_store(region_location(self.host, self.lake_url, os.environ, purpose))

    def lake_table(self, name: str):
        """A Delta table of the lake (meridian.lake_tables.DELTA_TABLES)."""
        return self.lake_location.table(name)

    def day_partition(self, table: str, day: str) -> Path:
        return self.table(table) / f"day={day}"


def local_path(uri: str) -> Path | None:
    """The local file a `file://` URI (percent-encoded, as MLflow and Delta write it) or an
    absolute path names; None for any other URI (a bucket's, a tracking server's). Before,
    the URI's text was taken as the path, and a data root with a space or a non-ASCII letter
    (`/data/cli home ü`) had every model version "not a local folder"."""
    from urllib.parse import unquote, urlparse

    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri) if uri.startswith("/") else None


def region_paths(region: Region, home: Path | None = None) -> RegionPaths:
    """The region's folders. A storage root on object storage (`s3://bucket/prefix`) holds the
    region's lake tables (`<root>/lake`); its working folder is then `regions/<region>` under
    the data root."""
    if "://" in region.storage_root:
        if not region.storage_root.startswith("s3://"):
            raise ValueError(
                f"region {region.name}: storage_root {region.storage_root!r}: only s3:// object-store URLs "
                "(or a local path) are supported"
            )
        local = ((home or meridian_home()) / "regions" / region.name).resolve()
        return RegionPaths(region=region.name, root=local, lake_url=f"{region.storage_root.rstrip('/')}/lake")
    root = Path(region.storage_root)
    if not root.is_absolute():
        root = (home or meridian_home()) / root
    return RegionPaths(region=region.name, root=root.resolve())


def replica_lake_url(dr_paths: RegionPaths, region: str) -> str:
    """Where `region`'s lake replica lives in its DR region's bucket: `<DR storage root>/replicas/<region>/lake`,
    beside the DR region's own lake (`<DR storage root>/lake`), never in it."""
    if dr_paths.lake_url is None:
        raise ValueError(
            f"{region}'s lake is on object storage, so its DR region {dr_paths.region} needs a storage_root "
            "on object storage too (it has a local one)"
        )
    return f"{dr_paths.lake_url.removesuffix('/lake')}/replicas/{region}/lake"
