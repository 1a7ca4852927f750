"""The DR read replica of a region's Redis online store: a real Redis replica (`REPLICAOF`).

In the production profile each active region R has its own Redis, and R's DR region runs a
second Redis that replicates it (`MERIDIAN_REDIS_REPLICA_URL_<R>`, meridian.settings). The
replica is a hot standby: Redis streams every write to it, so its lag is the replication
stream's, not the interval of a snapshot.

- `attach` makes the replica follow the primary (`REPLICAOF host port`; idempotent). The
  replica asset calls it on every run while R is served from its own site, and failback calls
  it to re-attach the replica after a failover.
- `status` measures the lag two ways: the replication offset difference in bytes (the
  primary's `master_repl_offset` minus what the replica has processed) and in seconds (a
  fresh timestamp written to the primary, read back on the replica).
- `promote` detaches the replica (`REPLICAOF NO ONE`) so the DR site can write to it: the
  failover's step for the online store. Rows the primary wrote that had not reached the
  replica are the online part of the RPO, counted at failback (`rows_missing`).

Redis replicates a whole server, so a replicated primary must hold only its own region's
keys: the settings refuse a replica for a region whose Redis is shared with another zone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from meridian.online_redis import redact
from meridian.online_store import OnlineStoreUnavailable

HEARTBEAT_FIELD = "__replication_heartbeat__"
# Written into the failover checkout when the replica was promoted: the region's online store
# is the promoted replica while the checkout is live (resources.online_store reads it).
PROMOTED_MARKER = "online/promoted-redis-replica.json"


def heartbeat_key(region: str) -> str:
    """A key of the region's key space that no feature view uses (views have no `__` names)."""
    return f"meridian:{region}:{HEARTBEAT_FIELD}"


def address(url: str) -> tuple[str, int]:
    """(host, port) of a redis:// URL: where a replica connects to follow it."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{redact(url)} is not a redis:// URL with a host")
    return parts.hostname, parts.port or 6379


def _client(url: str, timeout_s: float):
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def _guard(url: str, fn):
    import redis

    try:
        return fn()
    except redis.exceptions.RedisError as error:
        raise OnlineStoreUnavailable(f"Redis {redact(url)}: {type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class ReplicaStatus:
    """What the replica is and how far behind its primary, as one measurement saw it."""

    role: str  # "replica" (following), "primary" (promoted or never attached)
    following: str | None  # host:port it follows
    link_up: bool
    sync_in_progress: bool
    primary_reachable: bool
    primary_offset: int | None  # the primary's master_repl_offset
    replica_offset: int | None  # what the replica has processed of the stream
    offset_lag_bytes: int | None
    lag_seconds: float | None  # a fresh write's delay to the replica, or the age of the newest it has
    keys: int

    def as_dict(self) -> dict:
        return asdict(self)


def _info(client) -> dict:
    return client.info("replication")


def attach(replica_url: str, primary_url: str, *, timeout_s: float = 2.0) -> bool:
    """Make the replica follow the primary; False when it already did (nothing changed).

    Attaching a replica that holds other data discards it for the primary's (a full sync):
    the caller attaches only while the region is served from its own site.
    """
    host, port = address(primary_url)
    password = urlsplit(primary_url).password
    client = _client(replica_url, timeout_s)
    try:

        def run() -> bool:
            info = _info(client)
            if (
                info.get("role") == "slave"
                and str(info.get("master_host")) == host
                and int(info.get("master_port", 0)) == port
            ):
                return False
            if password is not None:
                client.config_set("masterauth", password)
            client.execute_command("REPLICAOF", host, port)
            return True

        return _guard(replica_url, run)
    finally:
        client.close()


def promote(replica_url: str, *, timeout_s: float = 2.0) -> ReplicaStatus:
    """Detach the replica from its primary so it takes writes; its state just before."""
    client = _client(replica_url, timeout_s)
    try:

        def run() -> ReplicaStatus:
            info = _info(client)
            before = _status_from(info, client.dbsize(), None, False)
            if info.get("role") == "slave" and int(info.get("master_sync_in_progress", 0)):
                raise OnlineStoreUnavailable(
                    f"Redis replica {redact(replica_url)} is still loading its first sync from "
                    f"{before.following}: it holds no complete copy to promote"
                )
            client.execute_command("REPLICAOF", "NO", "ONE")
            return before

        return _guard(replica_url, run)
    finally:
        client.close()


def _status_from(info: dict, keys: int, primary_info: dict | None, reachable: bool) -> ReplicaStatus:
    replica = info.get("role") == "slave"
    primary_offset = int(primary_info["master_repl_offset"]) if primary_info else None
    replica_offset = (
        int(info.get("slave_repl_offset", info.get("master_repl_offset", 0))) if replica else None
    )
    return ReplicaStatus(
        role="replica" if replica else "primary",
        following=f"{info['master_host']}:{info['master_port']}" if replica else None,
        link_up=replica and info.get("master_link_status") == "up",
        sync_in_progress=replica and bool(int(info.get("master_sync_in_progress", 0))),
        primary_reachable=reachable,
        primary_offset=primary_offset,
        replica_offset=replica_offset,
        offset_lag_bytes=max(0, primary_offset - replica_offset)
        if primary_offset is not None and replica_offset is not None
        else None,
        lag_seconds=None,
        keys=keys,
    )


def status(
    primary_url: str, replica_url: str, region: str, *, wait_s: float = 1.0, timeout_s: float = 2.0
) -> ReplicaStatus:
    """Measure the replica: role, link, offsets and lag in seconds.

    Seconds: the primary is stamped with the current time (a key of R's own key space) and
    the replica is read until the stamp arrives (the replication delay, up to `wait_s`); if
    it does not arrive, the lag is the age of the newest stamp the replica holds (None when
    it holds none). Raises OnlineStoreUnavailable when the replica does not answer; a
    primary that does not answer is reported, not raised (that is when the replica matters).
    """
    replica = _client(replica_url, timeout_s)
    primary = _client(primary_url, timeout_s)
    key = heartbeat_key(region)
    try:
        try:
            primary_info = _info(primary)  # the offset first: the stamp below must not count as lag
            reachable = True
        except Exception:  # the primary is down or frozen: measure what the replica has
            primary_info, reachable = None, False
        info = _guard(replica_url, lambda: _info(replica))
        measured = _status_from(info, _guard(replica_url, replica.dbsize), primary_info, reachable)
        written_at = time.time()
        if reachable:
            try:
                primary.set(key, repr(written_at))
            except Exception:
                reachable = False
        lag = None
        if reachable and measured.role == "replica":
            deadline = time.monotonic() + wait_s
            while True:
                seen = _guard(replica_url, lambda: replica.get(key))
                if seen is not None and float(seen) >= written_at:
                    lag = time.time() - written_at
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
        if lag is None:
            seen = _guard(replica_url, lambda: replica.get(key))
            lag = max(0.0, time.time() - float(seen)) if seen is not None else None
        return ReplicaStatus(
            **{
                **measured.as_dict(),
                "primary_reachable": reachable,
                "lag_seconds": None if lag is None else round(lag, 4),
            }
        )
    finally:
        replica.close()
        primary.close()


@dataclass(frozen=True)
class RedisReplicaLink:
    """Region R's Redis and its replica in R's DR region: what failover and failback drive."""

    region: str
    primary_url: str
    replica_url: str

    def attach(self) -> bool:
        return attach(self.replica_url, self.primary_url)

    def promote(self) -> ReplicaStatus:
        return promote(self.replica_url)

    def status(self, wait_s: float = 1.0) -> ReplicaStatus:
        return status(self.primary_url, self.replica_url, self.region, wait_s=wait_s)

    def open_replica(self, origin: str, timeout_seconds: float = 2.0):
        from meridian.online_redis import RedisOnlineStore

        return RedisOnlineStore(self.replica_url, self.region, timeout_seconds=timeout_seconds, origin=origin)

    def describe(self) -> str:
        return f"{redact(self.replica_url)} replicating {redact(self.primary_url)}"


def wait_in_sync(
    primary_url: str, replica_url: str, region: str, *, timeout_s: float = 30.0
) -> ReplicaStatus:
    """Block until the replica's link is up and it has the primary's whole stream (offset lag 0
    after a fresh write), or raise TimeoutError with the last measurement."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = status(primary_url, replica_url, region, wait_s=0.5)
        except OnlineStoreUnavailable:
            last = None
        if last and last.link_up and not last.sync_in_progress and (last.lag_seconds or 1.0) < 0.5:
            return last
        time.sleep(0.05)
    raise TimeoutError(
        f"Redis replica {redact(replica_url)} did not catch up within {timeout_s:.0f} s: {last}"
    )


def check_redis_settings(
    topology, default_url: str | None, urls: dict[str, str], replica_urls: dict[str, str], *, required: bool
) -> None:
    """Refuse, naming the variable, a Redis configuration that cannot work or would break
    residency; raises meridian.settings.SettingsError.

    - every per-region variable names a region of the topology, and a replica only an
      active region with a DR region;
    - with `required` (production), every active region has a Redis (its own or the shared one);
    - a replicated region has a Redis of its own, shared with no region of another zone
      (REPLICAOF copies the whole server into the DR region's zone);
    - a replica is no region's primary, not even its own.
    """
    from meridian.settings import REDIS_REPLICA_URL_PREFIX, REDIS_URL_PREFIX, SettingsError, region_env_suffix

    known = {r.name for r in topology.regions}
    problems: list[str] = []
    for prefix, given in ((REDIS_URL_PREFIX, urls), (REDIS_REPLICA_URL_PREFIX, replica_urls)):
        for region in sorted(set(given) - known):
            problems.append(
                f"{prefix}{region_env_suffix(region)} names no region of the topology "
                f"(known: {', '.join(sorted(known))})"
            )
    for name, url in [(f"{REDIS_URL_PREFIX}{region_env_suffix(r)}", u) for r, u in urls.items()] + [
        (f"{REDIS_REPLICA_URL_PREFIX}{region_env_suffix(r)}", u) for r, u in replica_urls.items()
    ]:
        try:
            address(url)
        except ValueError as error:
            problems.append(f"{name}: {error}")
    if problems:
        raise SettingsError("; ".join(problems))

    def primary_of(region: str) -> str | None:
        return urls.get(region) or default_url

    if required:
        missing = [r for r in topology.active_region_names if not primary_of(r)]
        if missing:
            raise SettingsError(
                "the online store needs a Redis for "
                + ", ".join(
                    f"{r} ({REDIS_URL_PREFIX}{region_env_suffix(r)} or MERIDIAN_REDIS_URL)" for r in missing
                )
            )
    primaries = {r: address(u) for r in known if (u := primary_of(r))}
    for region, replica_url in sorted(replica_urls.items()):
        var = f"{REDIS_REPLICA_URL_PREFIX}{region_env_suffix(region)}"
        if region not in topology.active_region_names or not topology.region(region).dr_region:
            problems.append(f"{var}: {region} is not an active region with a DR region")
            continue
        if region not in urls:
            problems.append(
                f"{var}: a replica copies its primary's whole server, so {region} needs a Redis of its "
                f"own ({REDIS_URL_PREFIX}{region_env_suffix(region)}), not the shared MERIDIAN_REDIS_URL"
            )
            continue
        own = primaries[region]
        foreign = sorted(
            r for r, a in primaries.items() if a == own and topology.zone_of(r) != topology.zone_of(region)
        )
        if foreign:
            problems.append(
                f"{var}: {region}'s Redis {own[0]}:{own[1]} also holds {', '.join(foreign)} of another zone; "
                f"replicating it to {topology.dr_region(region).name} would move their data out of their zone"
            )
        serving = sorted(r for r, a in primaries.items() if a == address(replica_url))
        if serving:
            problems.append(
                f"{var}: {redact(replica_url)} is the primary Redis of {', '.join(serving)}; a replica "
                "must be a server of its own"
            )
    if problems:
        raise SettingsError("; ".join(problems))
