"""The online feature store of each region: SQLite by default, Redis in production."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

from meridian.online_redis import RedisOnlineStore
from meridian.online_sqlite import SqliteOnlineStore
from meridian.online_store import OnlineStore
from meridian.paths import RegionPaths
from meridian.redis_replication import PROMOTED_MARKER, RedisReplicaLink


class OnlineStoreResource(dg.ConfigurableResource):
    """Opens a region's online store; asset code is the same for both backends."""

    backend: Literal["sqlite", "redis"] = Field(default="sqlite", description="sqlite (embedded) or redis")
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db when backend is redis: regions without their own"
    )
    redis_urls: dict[str, str] = Field(
        default_factory=dict, description="region -> its own Redis (MERIDIAN_REDIS_URL_<REGION>)"
    )
    replica_urls: dict[str, str] = Field(
        default_factory=dict,
        description="region -> the Redis in its DR region that replicates it (MERIDIAN_REDIS_REPLICA_URL_<REGION>)",
    )
    timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Redis connect and read timeout (the scoring service uses a tighter one: serving/main.py)",
    )

    @classmethod
    def from_settings(cls, config, topology, timeout_seconds: float = 2.0) -> OnlineStoreResource:
        """The store every process of a deployment opens (the definitions, the service), from
        meridian.settings; a Redis configuration that cannot work is refused here, at load."""
        from meridian.redis_replication import check_redis_settings

        if config.online_store == "redis":
            check_redis_settings(
                topology,
                config.redis_url,
                dict(config.redis_urls),
                dict(config.redis_replica_urls),
                required=True,
            )
        return cls(
            backend=config.online_store,
            redis_url=config.redis_url,
            redis_urls=dict(config.redis_urls),
            replica_urls=dict(config.redis_replica_urls),
            timeout_seconds=timeout_seconds,
        )

    def url_for(self, region: str) -> str:
        url = self.redis_urls.get(region) or self.redis_url
        if not url:
            raise ValueError(f"online store backend is redis but no Redis is configured for {region}")
        return url

    def replica_link(self, region: str) -> RedisReplicaLink | None:
        """R's Redis and its live replica in R's DR region, when the deployment has one."""
        if self.backend != "redis" or region not in self.replica_urls:
            return None
        return RedisReplicaLink(region, self.url_for(region), self.replica_urls[region])

    def open(self, paths: RegionPaths, create: bool = True) -> OnlineStore:
        """The region's store. `create=False` for readers: a missing SQLite file is an error."""
        if paths.host != paths.region:
            # Failed over: the region is served from the DR site. Its promoted Redis replica
            # when the failover promoted one (meridian.dr), else the SQLite snapshot checked
            # out there, whatever the primary's backend.
            link = self.replica_link(paths.region)
            if link is not None and (paths.root / PROMOTED_MARKER).is_file():
                return link.open_replica(origin=paths.host, timeout_seconds=self.timeout_seconds)
            return SqliteOnlineStore(
                paths.root / "online" / "online_store.db", origin=paths.host, create=create
            )
        if self.backend == "redis":
            return RedisOnlineStore(
                self.url_for(paths.region),
                paths.region,
                timeout_seconds=self.timeout_seconds,
                origin=paths.host,
            )
        return SqliteOnlineStore(paths.root / "online" / "online_store.db", origin=paths.host, create=create)
