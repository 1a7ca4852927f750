"""The online feature store of each region: SQLite by default, Redis in production."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from meridian.online_redis import RedisOnlineStore
from meridian.online_sqlite import SqliteOnlineStore
from meridian.online_store import OnlineStore
from meridian.paths import RegionPaths


class OnlineStoreResource(dg.ConfigurableResource):
    """Opens a region's online store; asset code is the same for both backends."""

    backend: Literal["sqlite", "redis"] = Field(default="sqlite", description="sqlite (embedded) or redis")
    redis_url: str | None = Field(default=None, description="redis://host:port/db when backend is redis")

    def open(self, paths: RegionPaths, create: bool = True) -> OnlineStore:
        """The region's store. `create=False` for readers: a missing SQLite file is an error."""
        if paths.host != paths.region:
            # Failed over: the region is served from its read replica in the DR site, a
            # SQLite snapshot checked out there (meridian.dr), whatever the primary's backend.
            return SqliteOnlineStore(
                paths.root / "online" / "online_store.db", origin=paths.host, create=create
            )
        if self.backend == "redis":
            if not self.redis_url:
                raise ValueError("online store backend is redis but no redis_url is configured")
            return RedisOnlineStore(self.redis_url, paths.region, origin=paths.host)
        return SqliteOnlineStore(paths.root / "online" / "online_store.db", origin=paths.host, create=create)
