"""Feature views and point-in-time retrieval against a brute-force reference, on random data.

Longer than ~400 lines on purpose: the property tests share one random scenario and its loader.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meridian.feature_store import (
    DBT_MANIFEST,
    Feature,
    FeatureView,
    FeatureViewError,
    dbt_definition,
    dbt_project_vars,
)
from meridian.retrieval import (
    collect_parts,
    point_in_time_sql,
    retrieval_parts,
    retrieve,
    retrieve_parts,
    write_parts,
)

T0 = datetime(2026, 1, 1)
KEYS = ("a", "b", "c", "d")  # "d" never appears in any view: a missing entity
VIEWS = (
    FeatureView(
        "spend",
        "spend_src",
        "customer",
        "ts",
        "created",
        (Feature("x", "double", -1.0),),
        timedelta(minutes=30),
        timedelta(0),
    ),
    FeatureView(
        "risk",
        "risk_src",
        "merchant",
        "ts",
        "created",
        (Feature("y", "bigint", 0), Feature("z", "boolean", False)),
        timedelta(minutes=90),
        timedelta(0),
    ),
    FeatureView(
        "late",
        "late_src",
        "customer",
        "ts",
        "created",
        (Feature("w", "double", None),),
        timedelta(days=1),
        timedelta(0),
    ),
)


def _feature_rows(value: st.SearchStrategy, n_features: int):
    row = st.tuples(
        st.sampled_from(KEYS[:3]), st.integers(0, 240), st.integers(0, 500), *([value] * n_features)
    )
    # Unique (key, ts, created): the tie-break on created is then total.
    return st.lists(row, max_size=40, unique_by=lambda r: (r[0], r[1], r[2]))


@st.composite
def scenario(draw):
    spend = draw(_feature_rows(st.floats(-1e3, 1e3, allow_nan=False), 1))
    risk = draw(_feature_rows(st.integers(-5, 5), 1))
    risk = [(*r, draw(st.booleans())) for r in risk]
    # "late": rows whose created time is long after their event time (late-arriving data).
    late = draw(_feature_rows(st.floats(0, 1, allow_nan=False), 1))
    late = [(k, ts, ts + 1000 + c, w) for k, ts, c, w in late]
    entities = draw(
        st.lists(
            st.tuples(st.sampled_from(KEYS), st.sampled_from(KEYS), st.integers(0, 300)),
            min_size=1,
            max_size=30,
        )
    )
    return spend, risk, late, entities


def _minutes(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def _load(con: duckdb.DuckDBPyConnection, spend, risk, late, entities) -> None:
    frames = {
        "spend_src": pl.DataFrame(spend, schema=["customer", "ts", "created", "x"], orient="row"),
        "risk_src": pl.DataFrame(risk, schema=["merchant", "ts", "created", "y", "z"], orient="row"),
        "late_src": pl.DataFrame(late, schema=["customer", "ts", "created", "w"], orient="row"),
        "entities": pl.DataFrame(entities, schema=["customer", "merchant", "t"], orient="row"),
    }
    schemas = {
        "x": pl.Float64,
        "y": pl.Int64,
        "z": pl.Boolean,
        "w": pl.Float64,
        "customer": pl.Utf8,
        "merchant": pl.Utf8,
    }
    for name, frame in frames.items():
        frame = frame.with_columns(
            [
                pl.col(c).map_elements(_minutes, return_dtype=pl.Datetime("us"))
                for c in ("ts", "created", "t")
                if c in frame.columns
            ]
            + [pl.col(c).cast(t) for c, t in schemas.items() if c in frame.columns]
        )
        con.register(f"{name}_frame", frame)
        con.execute(f"create or replace table {name} as select * from {name}_frame")


def _reference(view: FeatureView, rows, key: str, t: int) -> dict[str, object]:
    """Brute force: every row of the entity at or before t and within the TTL, the latest wins."""
    ttl = view.ttl.total_seconds() / 60
    live = [r for r in rows if r[0] == key and t - ttl <= r[1] <= t]
    if not live:
        return {view.column(f.name): f.default for f in view.features}
    best = max(live, key=lambda r: (r[1], r[2]))
    return {view.column(f.name): best[3 + i] for i, f in enumerate(view.features)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_point_in_time_retrieval_matches_brute_force(data):
    spend, risk, late, entities = data
    con = duckdb.connect()
    _load(con, spend, risk, late, entities)
    got = retrieve(con, "select * from entities", "t", VIEWS).pl()
    assert got.height == len(entities)
    got_rows = sorted(
        (
            r["customer"],
            r["merchant"],
            r["t"],
            *(r[VIEWS[i].column(f.name)] for i in range(3) for f in VIEWS[i].features),
        )
        for r in got.to_dicts()
    )
    expected = []
    for customer, merchant, t in entities:
        values = {
            **_reference(VIEWS[0], spend, customer, t),
            **_reference(VIEWS[1], risk, merchant, t),
            **_reference(VIEWS[2], late, customer, t),
        }
        expected.append(
            (
                customer,
                merchant,
                _minutes(t),
                *(values[VIEWS[i].column(f.name)] for i in range(3) for f in VIEWS[i].features),
            )
        )
    assert got_rows == sorted(expected, key=lambda r: tuple((v is None, v) for v in r))
    # Bounding the views to the entities' time range (as batch scoring of one day does)
    # changes nothing.
    times = [_minutes(t) for _, _, t in entities]
    bounded = retrieve(con, "select * from entities", "t", VIEWS, (min(times), max(times))).pl()
    key = ["customer", "merchant", "t"]
    assert bounded.sort(key, nulls_last=True).equals(got.sort(key, nulls_last=True))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_a_view_declared_unique_skips_de_duplication_and_serves_the_same_rows(data):
    """On a source that is one row per (entity, feature time), as a declared `unique_key`
    promises, retrieval without the de-duplication window gives exactly the rows with it;
    the SQL really leaves the window out."""
    import dataclasses

    spend, risk, late, entities = data

    def one_per_key_and_time(rows):
        latest = {}
        for row in sorted(rows, key=lambda r: r[2]):
            latest[row[0], row[1]] = row  # the latest created wins, as de-duplication picks
        return list(latest.values())

    con = duckdb.connect()
    _load(con, *(one_per_key_and_time(rows) for rows in (spend, risk, late)), entities)
    unique = tuple(dataclasses.replace(v, unique_key=(v.entity_key, "ts")) for v in VIEWS)
    assert "row_number()" in point_in_time_sql("select * from entities", "t", VIEWS)
    assert "row_number()" not in point_in_time_sql("select * from entities", "t", unique)
    key = ["customer", "merchant", "t"]
    declared = retrieve(con, "select * from entities", "t", unique).pl().sort(key, nulls_last=True)
    general = retrieve(con, "select * from entities", "t", VIEWS).pl().sort(key, nulls_last=True)
    assert declared.equals(general)


def test_a_unique_key_without_the_entity_key_is_refused():
    with pytest.raises(FeatureViewError, match="must include the entity key"):
        FeatureView(
            "v", "src", "customer", "ts", "ts", (), timedelta(days=1), timedelta(0), unique_key=("ts",)
        )


def test_a_value_from_the_future_is_never_served():
    con = duckdb.connect()
    _load(con, [("a", 100, 100, 1.0), ("a", 101, 101, 2.0)], [], [], [("a", "m", 100)])
    got = retrieve(con, "select * from entities", "t", VIEWS[:1]).pl()
    assert got["spend__x"].to_list() == [1.0]


def test_the_version_changes_with_the_definition_and_the_source_sql():
    base = FeatureView(
        "v",
        "src",
        "k",
        "ts",
        "created",
        (Feature("x", "double"),),
        timedelta(days=1),
        timedelta(0),
        "select 1",
    )
    from dataclasses import replace

    assert base.version == replace(base).version
    assert base.version != replace(base, ttl=timedelta(days=2)).version
    assert base.version != replace(base, warmup=timedelta(days=2)).version
    assert base.version != replace(base, source_sql="select 2").version
    assert base.version != replace(base, features=(Feature("x", "float"),)).version
    # Declaring the source unique changes how rows are retrieved, not which: same version.
    assert base.version == replace(base, unique_key=("k", "ts")).version


def _edited_manifest(tmp_path, edit) -> Path:
    data = json.loads(DBT_MANIFEST.read_text())
    edit(data)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_a_views_dbt_definition_changes_with_upstream_models_macros_and_vars(tmp_path):
    """The version of customer_spend must move when anything that determines its values moves:
    an upstream model (stg_transactions), a macro the model uses, or a var it reads."""
    before = dbt_definition("customer_spend_features")

    def upstream(data):
        data["nodes"]["model.meridian.stg_transactions"]["checksum"]["checksum"] = "changed"

    def macro(data):
        data["macros"]["macro.meridian.days_before"]["macro_sql"] += "\n-- changed"

    def unrelated(data):
        data["nodes"]["model.meridian.stg_labels"]["checksum"]["checksum"] = "changed"

    assert dbt_definition("customer_spend_features", _edited_manifest(tmp_path, upstream)) != before
    assert dbt_definition("customer_spend_features", _edited_manifest(tmp_path, macro)) != before
    # stg_labels is not an ancestor of customer_spend_features: its version stays
    assert dbt_definition("customer_spend_features", _edited_manifest(tmp_path, unrelated)) == before
    assert dbt_definition("merchant_risk_features", _edited_manifest(tmp_path, unrelated)) != dbt_definition(
        "merchant_risk_features"
    )
    more_history = {**dbt_project_vars(), "feature_lookback_days": 45}
    assert dbt_definition("customer_spend_features", project_vars=more_history) != before
    # A var the model never reads, and the run-scoped ones, leave it alone.
    other = {
        **dbt_project_vars(),
        "merchant_risk_prior_weight": 99,
        "region": "eu-west",
        "min_day": "2026-02-01",
    }
    assert dbt_definition("customer_spend_features", project_vars=other) == before
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        dbt_definition("no_such_model")


def test_a_zero_or_negative_ttl_is_refused_with_the_reason():
    with pytest.raises(FeatureViewError, match=r"ttl must be positive.*Feast reads zero"):
        FeatureView("v", "src", "k", "ts", "ts", (Feature("x", "double"),), timedelta(0), timedelta(0))
    with pytest.raises(FeatureViewError, match=r"warmup must be >= 0"):
        FeatureView("v", "src", "k", "ts", "ts", (Feature("x", "double"),), timedelta(1), timedelta(-1))


ZONES = ("UTC", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "America/St_Johns")
TS_TYPES = ("timestamp", "timestamptz", "timestamp_ns")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario(),
    st.sampled_from(ZONES),
    st.sampled_from(TS_TYPES),
    st.sampled_from(TS_TYPES),
    st.sampled_from(("naive", "aware-utc", "aware-tokyo")),
)
def test_retrieval_is_the_same_in_any_session_time_zone_timestamp_type_and_bound_kind(
    data, zone, view_type, entity_type, bound_kind
):
    """Naive-UTC and aware bounds; TIMESTAMP, TIMESTAMPTZ and TIMESTAMP_NS columns on either
    side; DuckDB sessions in zones with offsets from -5 to +14 (and a half hour): the rows
    and values never change."""
    from zoneinfo import ZoneInfo

    spend, risk, late, entities = data
    baseline = duckdb.connect()
    _load(baseline, spend, risk, late, entities)
    expected = retrieve(baseline, "select * from entities", "t", VIEWS).pl()

    con = duckdb.connect()
    _load(con, spend, risk, late, entities)
    con.execute(f"set TimeZone = '{zone}'")
    # Re-type the columns as the same instants: naive values are UTC, so a TIMESTAMPTZ copy
    # takes them at +00.
    for table, columns in (
        ("spend_src", ("ts", "created")),
        ("risk_src", ("ts", "created")),
        ("late_src", ("ts", "created")),
        ("entities", ("t",)),
    ):
        wanted = entity_type if table == "entities" else view_type
        casts = ", ".join(
            f"cast(timezone('UTC', {c}) as {wanted}) as {c}"
            if wanted == "timestamptz"
            else f"cast({c} as {wanted}) as {c}"
            for c in columns
        )
        con.execute(f"create or replace table {table} as select * replace ({casts}) from {table}")
    got = retrieve(con, "select * from entities", "t", VIEWS).pl()
    features = [c for c in expected.columns if "__" in c and not c.endswith("feature_time")]
    key = ["customer", "merchant"]

    def comparable(frame):
        return (
            frame.with_columns(
                pl.col("t").cast(pl.Datetime("us", "UTC")).dt.replace_time_zone(None)
                if isinstance(frame.schema["t"], pl.Datetime) and frame.schema["t"].time_zone
                else pl.col("t").cast(pl.Datetime("us"))
            )
            .select(*key, "t", *features)
            .sort(*key, "t", *features, nulls_last=True)
        )

    assert comparable(got).equals(comparable(expected))
    times = [_minutes(t) for _, _, t in entities]
    bounds = (min(times), max(times))
    if bound_kind == "aware-utc":
        bounds = tuple(b.replace(tzinfo=ZoneInfo("UTC")) for b in bounds)
    elif bound_kind == "aware-tokyo":
        bounds = tuple(b.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo("Asia/Tokyo")) for b in bounds)
    bounded = retrieve(con, "select * from entities", "t", VIEWS, bounds).pl()
    assert comparable(bounded).equals(comparable(expected))


def test_every_feature_views_columns_are_in_its_dbt_models_enforced_contract_with_the_same_type():
    """The views (meridian/feature_views.py) and the dbt contracts (features.yml) declare the
    same columns twice; this holds them equal, and every contract column is documented."""
    import yaml

    from meridian.feature_views import feature_views
    from meridian.paths import REPO_ROOT

    project = yaml.safe_load((REPO_ROOT / "dbt_project" / "dbt_project.yml").read_text())
    assert project["models"]["meridian"]["features"]["+contract"] == {"enforced": True}
    spec = yaml.safe_load((REPO_ROOT / "dbt_project" / "models" / "features" / "features.yml").read_text())
    contracts = {m["name"]: {c["name"]: c for c in m["columns"]} for m in spec["models"]}
    for view in feature_views():
        columns = contracts[view.source]
        assert all(c.get("description") and c.get("data_type") for c in columns.values()), view.source
        for feature in view.features:
            assert columns[feature.name]["data_type"] == feature.dtype, (view.source, feature.name)
        assert view.entity_key in columns
        if view.unique_key:  # skips de-duplication: the model must carry the uniqueness test
            tests = next(m for m in spec["models"] if m["name"] == view.source).get("data_tests", [])
            declared = [
                t["meridian_unique_combination"]["arguments"]["columns"] for t in tests if isinstance(t, dict)
            ]
            assert list(view.unique_key) in declared, (view.name, declared)
            (time_column,) = [c for c in view.unique_key if c != view.entity_key]
            assert time_column in view.event_timestamp, (view.name, view.event_timestamp)


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(1, 12))
def test_a_retrieval_in_entity_parts_returns_every_row_once_as_the_whole_join_does(data, part_rows):
    """Cut into parts of at most `part_rows` rows of the views keyed on the first view's entity
    (customer: `spend` and `late`; `risk`, by merchant, is joined whole in each part), the
    retrieval returns the whole join's rows, each once: entity rows with a NULL key and keys no
    view holds included. The session's ASOF planning setting is as it was afterwards, and the
    entity rows the parts shared (computed once) are gone."""
    spend, risk, late, entities = data
    con = duckdb.connect()
    _load(con, spend, risk, late, entities)
    con.execute("insert into entities values (null, 'a', ?), (null, null, ?)", [_minutes(100), _minutes(5)])
    whole = retrieve(con, "select * from entities", "t", VIEWS).pl()
    parts = retrieval_parts(con, "select * from entities", VIEWS, part_rows=part_rows)
    assert parts == max(1, -(-max(len(spend), len(late)) // part_rows))
    got = collect_parts(retrieve_parts(con, "select * from entities", "t", VIEWS, part_rows=part_rows))
    assert got.height == len(entities) + 2
    assert _sorted(got).equals(_sorted(whole))
    one_by_one = [
        rel.pl() for rel in retrieve_parts(con, "select * from entities", "t", VIEWS, part_rows=part_rows)
    ]
    assert len(one_by_one) == parts and sum(f.height for f in one_by_one) == got.height
    assert con.sql("select current_setting('asof_loop_join_threshold')").fetchall()[0][0] == 64
    assert con.sql("select count(*) from duckdb_tables() where temporary").fetchall() == [(0,)]


def test_entity_keys_of_two_types_are_joined_whole_since_their_hashes_differ():
    """1 (BIGINT) and 1.0 (DOUBLE) join, but hash apart: such a retrieval is not cut."""
    con = duckdb.connect()
    con.execute(
        "create table spend_src as select 1::double as customer, ?::timestamp as ts, ts as created, 5.0 as x",
        [_minutes(0)],
    )
    con.execute("create table entities as select 1::bigint as customer, ?::timestamp as t", [_minutes(10)])
    views = (VIEWS[0],)
    assert retrieval_parts(con, "select * from entities", views, part_rows=1) == 1
    got = collect_parts(retrieve_parts(con, "select * from entities", "t", views, part_rows=1))
    assert got["spend__x"].to_list() == [5.0]


def test_a_written_retrieval_is_whole_or_the_file_it_replaces(tmp_path):
    """Written part by part to one file; a write that fails midway leaves the earlier file as it was."""
    con = duckdb.connect()
    spend = [(k, m, m, float(m)) for k in KEYS[:3] for m in range(0, 200, 10)]
    entities = [(k, "a", m) for k in KEYS for m in range(5, 200, 20)]
    _load(con, spend, [], [], entities)
    views = (VIEWS[0],)
    path = tmp_path / "training.parquet"
    rows = write_parts(retrieve_parts(con, "select * from entities", "t", views, part_rows=20), path)
    expected = retrieve(con, "select * from entities", "t", views).pl()
    assert rows == len(entities) and _sorted(pl.read_parquet(path)).equals(_sorted(expected))
    before = path.read_bytes()

    def parts_then_a_failure():
        for i, part in enumerate(retrieve_parts(con, "select * from entities", "t", views, part_rows=20)):
            if i == 2:
                raise OSError("disk full")
            yield part

    with pytest.raises(OSError, match="disk full"):
        write_parts(parts_then_a_failure(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["training.parquet"]  # no temporary left
