"""The online store, on SQLite and on a real Redis server started here on loopback."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import orjson
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.definitions_file import load_definitions_module
from assets.features import VIEWS, feature_view_assets
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.online import online_features
from assets.transforms import regional_dbt_models
from meridian.online_redis import RedisOnlineStore
from meridian.online_store import OnlineRow, OnlineStoreUnavailable, serve, to_micros
from resources.lake import RegionalLakeResource
from resources.online_store import OnlineStoreResource
from resources.source import TransactionSourceResource
from tests.conftest import free_port, open_test_store

_EXAMPLES = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path: Path):
    s = open_test_store(request, tmp_path)
    yield s
    s.close()


def _row(entity: str, t: int, value: float, view: str = "customer_spend", version: str = "v1") -> OnlineRow:
    return OnlineRow(view, entity, t, version, {"txn_count_1h": value})


def test_reads_and_writes_round_trip_with_version_and_event_time(store):
    result = store.write(
        [_row("c1", 100, 1.0), _row("c2", 200, 2.0), _row("m1", 50, 3.0, view="merchant_risk")]
    )
    assert (result.applied, result.stale) == (3, 0)
    assert store.read("customer_spend", "c1") == _row("c1", 100, 1.0)
    assert store.read("customer_spend", "nobody") is None
    assert set(store.read_many("customer_spend", ["c1", "c2", "c3"])) == {"c1", "c2"}
    assert store.count("customer_spend") == 2 and store.count("merchant_risk") == 1


def test_read_keys_answers_each_view_and_entity_in_the_order_asked(store):
    """The scoring path reads a customer's and a merchant's rows at once (one statement, one
    round trip); each answer is the same row `read` gives, a missing key is None."""
    store.write([_row("k1", 100, 1.0), _row("m1", 200, 2.0, view="merchant_risk", version="v2")])
    keys = [
        ("merchant_risk", "m1"),
        ("customer_spend", "nobody"),
        ("customer_spend", "k1"),
        ("merchant_risk", "k1"),
    ]
    assert store.read_keys(keys) == [store.read(view, entity) for view, entity in keys]
    assert [row and row.entity for row in store.read_keys(keys)] == ["m1", None, "k1", None]
    assert store.read_keys([]) == []


def test_an_older_write_never_replaces_a_newer_value_and_a_rerun_is_idempotent(store):
    store.write([_row("c1", 200, 2.0)])
    assert store.write([_row("c1", 100, 1.0)]).stale == 1
    assert store.read("customer_spend", "c1").values == {"txn_count_1h": 2.0}
    assert store.write([_row("c1", 200, 2.0)]).applied == 1  # same event again: idempotent
    assert store.read("customer_spend", "c1").event_time_us == 200


# One entity's writes from two sources (batch, push) in an arbitrary interleaving.
writes = st.lists(
    st.tuples(st.sampled_from(["batch", "push"]), st.sampled_from(["c1", "c2", "c3"]), st.integers(0, 50)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=writes)
def test_batch_and_push_in_any_order_never_move_a_value_back_in_time(store, sequence):
    entities = {e for _, e, _ in sequence}
    prefix = f"example-{next(_EXAMPLES)}-"  # fresh entities per example (the store is shared)
    seen: dict[str, int] = {}
    for source, entity, t in sequence:
        key = prefix + entity
        store.write([_row(key, t, float(t), version=source)])
        current = store.read("customer_spend", key)
        assert current.event_time_us == max(seen.get(key, t), t)  # monotone after every write
        seen[key] = current.event_time_us
    for entity in entities:
        expected = max(t for _, e, t in sequence if e == entity)
        assert store.read("customer_spend", prefix + entity).values == {"txn_count_1h": float(expected)}


# A batch of rows as the push thread and the conflict tooling send them: repeated keys,
# odd entity names, payloads that need escaping, HLC and origin set or left to the store.
batch_rows = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "ü 'quoted' \"x\"", "tab\tnewline\n", "e" * 300]),
        st.integers(0, 2**62),
        st.one_of(st.floats(allow_nan=False), st.text(max_size=20), st.none()),
        st.sampled_from([5, 2**53 + 1, 2**62]),  # 0 would be stamped with the store's clock
        st.sampled_from(["", "eu-west", "us-east"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(rows=batch_rows)
def test_one_batched_write_equals_the_row_by_row_upsert(tmp_path_factory, rows):
    """SqliteOnlineStore.write sends a batch as one JSON array (UPSERT_JSON); it must land
    exactly as the same rows upserted one by one, in order, with the same change count."""
    import sqlite3

    from meridian.online_sqlite import SqliteOnlineStore

    root = tmp_path_factory.mktemp("batched")
    store = SqliteOnlineStore(root / "batched.sqlite", origin="here")
    one_by_one = sqlite3.connect(root / "rows.sqlite")
    one_by_one.execute(SqliteOnlineStore.SCHEMA)
    for entity, t, _value, hlc, origin in rows[:3]:  # some rows already stored
        store.write([OnlineRow("v", entity, t // 2, "old", {"x": 1}, hlc, origin or "here")])
        one_by_one.execute(
            SqliteOnlineStore.UPSERT, ("v", entity, t // 2, "old", '{"x":1}', hlc, origin or "here")
        )
    online = [OnlineRow("v", e, t, "new", {"x": value}, hlc, origin) for e, t, value, hlc, origin in rows]
    result = store.write(online)
    before = one_by_one.total_changes
    for r in online:
        one_by_one.execute(
            SqliteOnlineStore.UPSERT,
            (
                "v",
                r.entity,
                r.event_time_us,
                "new",
                orjson.dumps(r.values).decode(),
                r.hlc,
                r.origin or "here",
            ),
        )
    query = (
        "select view, entity, event_time_us, version, payload, hlc, origin from online_features order by 1, 2"
    )
    batched = sqlite3.connect(root / "batched.sqlite").execute(query).fetchall()
    assert batched == one_by_one.execute(query).fetchall()
    assert result.applied == one_by_one.total_changes - before
    assert result.applied + result.stale == len(rows)
    store.close()


@settings(max_examples=60, deadline=None)
@given(rows=batch_rows)
def test_a_frame_written_in_key_order_lands_as_its_rows_upserted_in_arrival_order(tmp_path_factory, rows):
    """write_frame applies a frame sorted by entity (stable): with repeated entities, odd names and
    rows already stored, the store ends as the same rows upserted one by one in the frame's order."""
    import sqlite3

    import polars as pl

    from meridian.online_sqlite import SqliteOnlineStore

    root = tmp_path_factory.mktemp("frame")
    store = SqliteOnlineStore(root / "frame.sqlite", origin="here")
    one_by_one = sqlite3.connect(root / "rows.sqlite")
    one_by_one.execute(SqliteOnlineStore.SCHEMA)
    for entity, t, _value, hlc, _origin in rows[:3]:  # some rows already stored
        store.write([OnlineRow("v", entity, t // 2, "old", {"x": 1}, hlc, "here")])
        one_by_one.execute(SqliteOnlineStore.UPSERT, ("v", entity, t // 2, "old", '{"x":1}', hlc, "here"))
    frame = pl.DataFrame(
        {
            "entity": [e for e, *_ in rows],
            "event_time_us": [t for _, t, *_ in rows],
            "payload": [orjson.dumps({"x": value}).decode() for _, _, value, *_ in rows],
        },
        schema={"entity": pl.String, "event_time_us": pl.Int64, "payload": pl.String},
    )
    result = store.write_frame("v", "new", frame)
    # write_frame stamps every row of a chunk with one HLC: the reference uses the one it stored.
    stamps = dict(sqlite3.connect(root / "frame.sqlite").execute("select entity, hlc from online_features"))
    before = one_by_one.total_changes
    for entity, t, payload in frame.iter_rows():
        one_by_one.execute(SqliteOnlineStore.UPSERT, ("v", entity, t, "new", payload, stamps[entity], "here"))
    query = "select view, entity, event_time_us, version, payload, origin from online_features order by 1, 2"
    assert (
        sqlite3.connect(root / "frame.sqlite").execute(query).fetchall()
        == one_by_one.execute(query).fetchall()
    )
    assert result.applied == one_by_one.total_changes - before
    store.close()


def test_serving_applies_the_ttl_and_the_documented_defaults():
    view = VIEWS["customer_spend"]
    now = to_micros(datetime(2026, 1, 31))
    fresh = OnlineRow(view.name, "c1", now - 10, view.version, {"txn_count_1h": 3, "amount_usd_1h": 9.5})
    assert serve(view, fresh, now)["txn_count_1h"] == 3
    assert serve(view, fresh, now)["txn_count_30d"] == 0  # a feature the row lacks: its default
    too_old = now - int(view.ttl.total_seconds() * 1e6) - 1
    expired = OnlineRow(view.name, "c1", too_old, view.version, {"txn_count_1h": 3})
    assert serve(view, expired, now) == {f.name: f.default for f in view.features}
    assert serve(view, None, now)["is_new_device_30d"] is True


def test_an_unreachable_redis_is_a_clear_error():
    down = RedisOnlineStore(f"redis://127.0.0.1:{free_port()}/0", "us-east", timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(OnlineStoreUnavailable, match="unreachable"):
        down.read("customer_spend", "c1")
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- the asset

REGION = "eu-west"
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


def _materialize(home: Path, backend: OnlineStoreResource, first: str, last: str, assets) -> None:
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"region": REGION, "day": first})),
        ASSET_PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"region": REGION, "day": last})),
    }
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=800, malformed_rate=0.0),
        "online_store": backend,
    }
    assert dg.materialize(assets, resources=resources, tags=tags).success


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_asset_holds_each_entitys_latest_values_and_a_backfill_never_regresses(
    backend, tmp_path: Path, request, monkeypatch
):
    import duckdb

    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    if backend == "sqlite":
        resource = OnlineStoreResource()
    else:
        # A database of its own on the worker's shared server: other modules (the production
        # profile's) write eu-west's key space too.
        import redis

        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/7"
        redis.Redis.from_url(url).flushdb()
        resource = OnlineStoreResource(backend="redis", redis_url=url)
    pipeline = [transactions_ingestion, labels_ingestion, regional_dbt_models, feature_view_assets]
    _materialize(home, resource, DAYS[0], DAYS[-1], pipeline)
    _materialize(home, resource, DAYS[0], DAYS[-1], [online_features])
    _materialize(home, resource, DAYS[0], DAYS[0], [online_features])  # an old day again: no regression

    from meridian.paths import region_paths
    from meridian.topology import load_topology

    paths = region_paths(load_topology().region(REGION), home)
    store = resource.open(paths)
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    view = VIEWS["customer_spend"]
    latest = dict(
        con.sql("select customer_id, max(event_time) from customer_spend_features group by 1").fetchall()
    )
    assert store.count("customer_spend") == len(latest)
    for customer, t in list(latest.items())[:200]:
        row = store.read("customer_spend", customer)
        assert row.event_time_us == to_micros(t) and row.version == view.version
    merchants = con.sql("select count(distinct merchant_id) from merchant_risk_features").fetchall()[0][0]
    assert store.count("merchant_risk") == merchants
    # The asset's bulk encoding stores exactly what a row-by-row write of the same rows would.
    from assets.online import latest_frame, online_rows

    for v in VIEWS.values():
        frame = latest_frame(con, v, DAYS[-1])
        slow = {r.entity: r for r in online_rows(con, v, DAYS[-1])}
        assert frame.height == len(slow) > 0
        for entity, t, payload in frame.iter_rows():
            assert t == slow[entity].event_time_us and orjson.loads(payload) == slow[entity].values
    store.close()


def test_a_corrupt_row_is_the_store_unavailable_never_a_server_error(tmp_path):
    """A row whose payload is not JSON (a torn write, a bad restore): reading it, and the health
    probe's real lookup, raise OnlineStoreUnavailable (the service's 503), not a decode error."""
    import sqlite3

    from meridian.online_sqlite import SqliteOnlineStore

    store = SqliteOnlineStore(tmp_path / "online.db", origin="eu-west")
    store.write([OnlineRow("customer_spend", "c1", 1, "v", {"spend_7d": 1.0})])
    store.probe()
    con = sqlite3.connect(tmp_path / "online.db")
    con.execute("update online_features set payload = ? where entity = 'c1'", (b"{not json",))
    con.commit()
    con.close()
    with pytest.raises(OnlineStoreUnavailable, match="corrupt row customer_spend/c1"):
        store.read("customer_spend", "c1")
    with pytest.raises(OnlineStoreUnavailable, match="unreadable"):
        store.probe()
    store.close()
