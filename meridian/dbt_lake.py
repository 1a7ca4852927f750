"""dbt-duckdb plugin: before dbt reads the warehouse, bring its copy of the lake up to date.

Configured in `dbt_project/profiles.yml` (`plugins: - module: meridian.dbt_lake`), so a dbt
invocation from Dagster and one from a shell behave alike. When dbt opens the warehouse,
`configure_connection` syncs the region's Delta tables into the schema `lake`
(meridian.lake_sync), which the sources read. The lake is the `lake_root` folder, or an
`s3://` URL reached with the region's endpoint and credentials (meridian.object_store).
`versions` (JSON, `{"raw_transactions": 12, ...}`) pins table versions: a rebuild of a
training set's exact inputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from dbt.adapters.duckdb.plugins import BasePlugin

from meridian.lake_sync import sync_lake
from meridian.lake_tables import LakeLocation


def lake_location(lake_root: str, region: str) -> LakeLocation:
    """The region's lake at `lake_root`: a local folder, or s3://bucket/prefix with its credentials."""
    if lake_root.startswith("s3://"):
        from meridian.object_store import region_location

        return LakeLocation.on_object_store(
            region_location(
                region, lake_root, os.environ, f"{region}'s lake is on object storage ({lake_root})"
            )
        )
    return LakeLocation.local(Path(lake_root))


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.lake_root = str(plugin_config.get("lake_root") or "")
        self.region = str(plugin_config.get("region") or "")
        pinned = str(plugin_config.get("versions") or "").strip()
        self.versions = {str(k): int(v) for k, v in orjson.loads(pinned).items()} if pinned else None

    def configure_connection(self, conn) -> None:
        if not self.lake_root:
            raise ValueError(
                "meridian.dbt_lake: no lake_root configured (var lake_root or MERIDIAN_DBT_LAKE_ROOT)"
            )
        sync_lake(conn, lake_location(self.lake_root, self.region), versions=self.versions)
