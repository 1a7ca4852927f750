"""The DR read replica of a region's Redis is a real Redis replica (REPLICAOF), on real servers.

The drill that kills the primary and serves from the promoted replica is in
tests/test_failover.py (it needs the trained region that module builds).
"""

from __future__ import annotations

import time

import pytest
import redis

from meridian.online_redis import RedisOnlineStore
from meridian.online_store import OnlineRow, OnlineStoreUnavailable
from meridian.redis_replication import RedisReplicaLink, check_redis_settings, redact, wait_in_sync
from meridian.settings import SettingsError, settings
from meridian.topology import load_topology
from tests.servers import RedisServer


@pytest.fixture
def pair(tmp_path):
    primary = RedisServer(tmp_path / "primary", durable=True).start()
    replica = RedisServer(tmp_path / "replica").start()
    yield primary, replica
    primary.close()
    replica.close()


def _rows(prefix: str, n: int, t: int = 1) -> list[OnlineRow]:
    return [OnlineRow("customer_spend", f"{prefix}-{i}", t, "v1", {"spend_7d": float(i)}) for i in range(n)]


def test_the_replica_follows_its_primary_and_its_lag_is_measured(pair):
    primary, replica = pair
    link = RedisReplicaLink("eu-west", primary.url, replica.url)
    assert link.attach() is True and link.attach() is False  # idempotent
    store = RedisOnlineStore(primary.url, "eu-west")
    assert store.write(_rows("c", 500)).applied == 500
    synced = wait_in_sync(primary.url, replica.url, "eu-west", timeout_s=30)
    assert synced.role == "replica" and synced.link_up and not synced.sync_in_progress
    assert synced.following == f"127.0.0.1:{primary.port}"
    assert synced.offset_lag_bytes == 0 and synced.primary_offset == synced.replica_offset > 0
    assert 0 <= synced.lag_seconds < 0.5
    # What the replica holds is the primary's rows, read through the store interface.
    copy = link.open_replica(origin="eu-central")
    assert copy.count("customer_spend") == 500 and copy.read("customer_spend", "c-7").values == {
        "spend_7d": 7.0
    }

    # The link breaks (a partition: the replica is pointed at an address where nothing answers),
    # the primary takes writes the replica never gets, then the primary dies.
    from tests.servers import free_port

    redis.Redis.from_url(replica.url).execute_command("REPLICAOF", "127.0.0.1", free_port())
    stopped_at = time.time()
    store.write(_rows("late", 3, t=2))
    primary.kill()
    time.sleep(0.3)
    down = link.status(wait_s=0.2)
    assert not down.primary_reachable and down.primary_offset is None and down.offset_lag_bytes is None
    assert down.role == "replica" and not down.link_up
    # Seconds behind: the age of the newest heartbeat it holds, which grows while the link is down.
    assert down.lag_seconds is not None and down.lag_seconds >= time.time() - stopped_at - 0.05
    assert copy.read("customer_spend", "late-0") is None  # never replicated

    # Promotion: it takes writes of its own.
    before = link.promote()
    assert before.role == "replica" and before.keys > 0
    copy.write([OnlineRow("customer_spend", "at-dr", 5, "v1", {})])
    assert copy.read("customer_spend", "at-dr").origin == "eu-central"
    assert link.status(wait_s=0).role == "primary"

    # The primary returns with everything it acknowledged (its append-only file); re-attached,
    # the replica resyncs from it: the writes it missed arrive, its own are replaced.
    primary.start()
    assert RedisOnlineStore(primary.url, "eu-west").read("customer_spend", "late-2") is not None
    assert link.attach() is True
    wait_in_sync(primary.url, replica.url, "eu-west", timeout_s=30)
    assert copy.read("customer_spend", "late-2") is not None
    assert copy.read("customer_spend", "at-dr") is None
    copy.close()
    store.close()


def test_a_replica_in_its_first_sync_or_down_is_not_promoted(pair):
    primary, replica = pair
    link = RedisReplicaLink("eu-west", primary.url, replica.url)
    replica.kill()
    with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{replica.port}"):
        link.promote()
    with pytest.raises(OnlineStoreUnavailable):
        link.status()


def test_credentials_never_reach_messages():
    assert redact("redis://:s3cret@redis.eu:6380/0") == "redis://:***@redis.eu:6380/0"
    assert redact("redis://app:s3cret@redis.eu/1") == "redis://app:***@redis.eu/1"
    assert redact("redis://redis.eu:6379/0") == "redis://redis.eu:6379/0"
    from tests.servers import free_port

    store = RedisOnlineStore(f"redis://:s3cret@127.0.0.1:{free_port()}/0", "eu-west", timeout_seconds=0.5)
    with pytest.raises(OnlineStoreUnavailable) as refused:
        store.read("customer_spend", "c-1")
    assert "s3cret" not in str(refused.value) and ":***@127.0.0.1" in str(refused.value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MERIDIAN_REDIS_URL_EU_WESTT": "redis://a:1/0"}, "MERIDIAN_REDIS_URL_EU_WESTT names no region"),
        (
            {"MERIDIAN_REDIS_URL_EU_WEST": "http://a:1/0"},
            "MERIDIAN_REDIS_URL_EU_WEST: http://a:1/0 is not a redis://",
        ),
        (
            {
                "MERIDIAN_REDIS_URL_EU_WEST": "redis://a:1/0",
                "MERIDIAN_REDIS_REPLICA_URL_EU_CENTRAL": "redis://b:1/0",
            },
            "eu-central is not an active region with a DR region",
        ),
        # Redis replicates a whole server: a region on the shared server cannot be replicated.
        ({"MERIDIAN_REDIS_REPLICA_URL_EU_WEST": "redis://b:1/0"}, "needs a Redis of its own"),
        # A server that also holds another zone's region would carry it into the DR region's zone.
        (
            {
                "MERIDIAN_REDIS_URL_EU_WEST": "redis://shared:1/0",
                "MERIDIAN_REDIS_URL_US_EAST": "redis://shared:1/1",
                "MERIDIAN_REDIS_REPLICA_URL_EU_WEST": "redis://dr:1/0",
            },
            "also holds us-east of another zone",
        ),
        (
            {
                "MERIDIAN_REDIS_URL_EU_WEST": "redis://eu:1/0",
                "MERIDIAN_REDIS_URL_US_EAST": "redis://us:1/0",
                "MERIDIAN_REDIS_REPLICA_URL_EU_WEST": "redis://us:1/0",
            },
            "is the primary Redis of us-east",
        ),
    ],
)
def test_redis_settings_that_would_break_residency_or_cannot_work_are_refused(env, message):
    config = settings({"MERIDIAN_PROFILE": "production", **env})
    with pytest.raises(SettingsError, match=message):
        check_redis_settings(
            load_topology(),
            config.redis_url or "redis://shared-default:6379/0",
            dict(config.redis_urls),
            dict(config.redis_replica_urls),
            required=True,
        )


def test_the_production_profile_names_regions_without_a_redis(monkeypatch):
    """Regions with their own Redis need no shared one; a region with neither is named at load."""
    from assets.definitions_file import load_definitions_module

    for name, value in {
        "MERIDIAN_PROFILE": "production",
        "DAGSTER_PG_URL": "postgresql+psycopg2://dagster@127.0.0.1:5432/dagster",
        "MERIDIAN_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MERIDIAN_REDIS_URL_EU_WEST": "redis://eu:6379/0",
        "MERIDIAN_REDIS_URL_US_EAST": "redis://us:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MERIDIAN_REDIS_URL", raising=False)
    with pytest.raises(
        SettingsError, match=r"needs a Redis for ap-southeast \(MERIDIAN_REDIS_URL_AP_SOUTHEAST"
    ):
        load_definitions_module().build_resources("production")
    monkeypatch.setenv("MERIDIAN_REDIS_URL_AP_SOUTHEAST", "redis://ap:6379/0")
    monkeypatch.setenv("MERIDIAN_REDIS_REPLICA_URL_EU_WEST", "redis://eu-dr:6379/0")
    store = load_definitions_module().build_resources("production")["online_store"]
    assert store.url_for("eu-west") == "redis://eu:6379/0"
    assert store.replica_link("eu-west") == RedisReplicaLink(
        "eu-west", "redis://eu:6379/0", "redis://eu-dr:6379/0"
    )
    assert store.replica_link("us-east") is None
