"""The whole regional graph, end to end, on small generated data."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.definitions_file import load_definitions_module
from assets.features import feature_view_assets
from assets.ingestion import RECONCILIATION_CHECK, labels_ingestion, transactions_ingestion
from assets.transforms import regional_dbt_models
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource
from tests.helpers import REGIONAL_ASSETS, lake_day, put_lake_day

pytestmark = pytest.mark.e2e
REGIONS = ("us-east", "eu-west")
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
ASSETS = [transactions_ingestion, labels_ingestion, regional_dbt_models, feature_view_assets]
SOURCE = {"rows_per_day": 400, "malformed_rate": 0.02, "fraud_rate": 0.03}
# The shortest window the main command trains on: the views' warm-up, 3 days of matured labels
# (the time split's minimum) and their maturity window.


def _resources(home: Path) -> dict[str, object]:
    resources = load_definitions_module().build_resources("local")
    return {
        **resources,
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(**SOURCE),
    }


def _materialize(instance, home, first: tuple[str, str], last: tuple[str, str], selection=None):
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"region": first[0], "day": first[1]})),
        ASSET_PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"region": last[0], "day": last[1]})),
    }
    return dg.materialize(
        ASSETS,
        resources=_resources(home),
        instance=instance,
        tags=tags,
        selection=selection,
        raise_on_error=False,
    )


def _lake_fingerprint(home: Path) -> dict[str, str]:
    """Content hash of every lake partition (rows sorted, so physical layout does not matter):
    a Parquet table's files, a Delta table's partitions at its newest version."""
    from meridian.lake_tables import LakeLocation

    out = {}

    def digest(frame: pl.DataFrame) -> str:
        frame = frame.sort(frame.columns) if frame.height else frame
        return hashlib.sha256(frame.write_csv().encode()).hexdigest()

    for table in sorted(home.glob("regions/*/lake/*")):
        if (table / "_delta_log").is_dir():
            delta = LakeLocation.local(table.parent).table(table.name)
            frame = delta.read()
            for (day, *rest), rows in frame.group_by(delta.partition_by, maintain_order=True):
                out[f"{table.relative_to(home)}/day={day}/{'/'.join(rest)}"] = digest(rows)
            continue
        for path in sorted(table.glob("day=*/*.parquet")):
            out[str(path.relative_to(home))] = digest(pl.read_parquet(path))
    return out


def _warehouse_fingerprint(home: Path, region: str) -> dict[str, tuple]:
    con = duckdb.connect(str(home / "regions" / region / "warehouse.duckdb"), read_only=True)
    try:
        return {
            t: con.execute(f"select count(*), sum(hash(columns(*)::varchar)) from (from {t})").fetchall()[0]
            for t in ("customer_spend_features", "merchant_risk_features", "labelled_events")
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-home")
    instance = dg.DagsterInstance.ephemeral()
    # One single-run backfill over two regions x three days: the multi-region dbt path.
    result = _materialize(instance, home, (REGIONS[0], DAYS[0]), (REGIONS[1], DAYS[-1]))
    return home, instance, result


def test_the_graph_materializes_every_region_day(graph):
    _, instance, result = graph
    assert result.success
    expected = {str(dg.MultiPartitionKey({"region": r, "day": d})) for r in REGIONS for d in DAYS}
    for key in REGIONAL_ASSETS:
        assert set(instance.get_materialized_partitions(dg.AssetKey(key))) == expected, key


def test_dbt_outputs_report_the_rows_each_region_built_for_the_run(graph, topology):
    home, _, result = graph
    (mat,) = [
        m
        for m in result.asset_materializations_for_node("regional_dbt_models")
        if m.asset_key == dg.AssetKey("customer_spend_features")
        and m.partition.endswith(f"|{REGIONS[0]}")
        and m.partition.startswith(DAYS[0])
    ]
    by_region = mat.metadata["rows_by_region"].value
    for region in REGIONS:
        con = duckdb.connect(str(home / "regions" / region / "warehouse.duckdb"), read_only=True)
        assert (
            by_region[region] == con.execute("select count(*) from customer_spend_features").fetchall()[0][0]
        )
        con.close()
    # The built table's columns as the warehouse holds them, shown as the asset's column schema.
    from meridian.feature_views import feature_views

    schema = {c.name: c.type for c in mat.metadata["dagster/column_schema"].value.columns}
    (view,) = [v for v in feature_views() if v.source == "customer_spend_features"]
    assert {f.name for f in view.features} <= set(schema) and schema["event_time"].startswith("TIMESTAMP")


def test_feature_views_carry_their_version_and_are_registered_in_each_region(graph):
    from meridian.feature_views import feature_views

    home, _, result = graph
    for view in feature_views():
        (mat, *_) = [
            m
            for m in result.asset_materializations_for_node("feature_views")
            if m.asset_key == dg.AssetKey(f"{view.name}_view")
        ]
        assert mat.metadata["feature_view_version"].value == view.version
        profiles = mat.metadata["profile_by_region"].value
        assert set(profiles) == set(REGIONS) and all(p["rows"] > 0 for p in profiles.values())
        for region in REGIONS:
            entry = (
                home / "regions" / region / "lake" / "feature_registry" / view.name / f"{view.version}.json"
            )
            assert json.loads(entry.read_text())["version"] == view.version


def test_every_check_passes_including_dbt_tests_and_reconciliation(graph):
    _, _, result = graph
    evaluations = result.get_asset_check_evaluations()
    names = {e.check_name for e in evaluations}
    assert RECONCILIATION_CHECK in names
    assert "unique_stg_transactions_transaction_id" in names
    assert "assert_velocity_windows_are_nested" in names
    assert [e.check_name for e in evaluations if not e.passed] == []


def test_accepted_plus_quarantined_equals_generated_for_every_partition(graph, topology):
    home, _, result = graph
    observed = {
        (o.asset_key.to_user_string(), o.partition): o.metadata["rows"].value
        for o in result.asset_observations_for_node("transactions_ingestion")
    }
    source = TransactionSourceResource(**SOURCE)
    for region_name in REGIONS:
        region = topology.region(region_name)
        lake = home / "regions" / region_name / "lake"
        for day in DAYS:
            delivered = source.transactions(region, date.fromisoformat(day))
            accepted = lake_day(lake, "raw_transactions", day)
            quarantined = lake_day(lake, "quarantined_transactions", day)
            assert accepted.height + quarantined.height == delivered.rows.height
            # Every injected row, plus the genuine rows whose id an injected copy took: conflicting
            # copies of an id are all quarantined, whichever came first.
            conflicted = quarantined.filter(pl.col("reason").str.starts_with("conflicting copies"))
            genuine = conflicted.height - delivered.injected_malformed.get("duplicate_transaction_id", 0)
            assert quarantined.height == delivered.injected_total + genuine > 0
            assert 0 < genuine <= delivered.injected_malformed["duplicate_transaction_id"]
            assert quarantined["reason"].null_count() == 0
            partition = str(dg.MultiPartitionKey({"region": region_name, "day": day}))
            assert observed[("raw_transactions", partition)] == accepted.height
            assert observed[("quarantined_transactions", partition)] == quarantined.height
            labels = source.labels(region, date.fromisoformat(day))
            n_labels = sum(lake_day(lake, t, day).height for t in ("raw_labels", "quarantined_labels"))
            assert n_labels == labels.rows.height


def test_each_regions_files_and_personal_data_stay_in_its_own_folder(graph):
    home, _, _ = graph
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files
    # Outside the regions only the control plane's provisioning records: a region's name, its
    # volume id, its root and when (meridian.dr.provisioning), never data.
    records = [p for p in files if p.relative_to(home).parts[:2] == ("platform", "provisioned")]
    assert sorted(p.stem for p in records) == sorted(REGIONS)
    for record in records:
        assert set(json.loads(record.read_bytes())) == {"region", "id", "root", "provisioned_at"}
    files = [p for p in files if p not in records]
    assert {p.relative_to(home).parts[:2] for p in files} == {("regions", r) for r in REGIONS}
    for path in home.glob("regions/*/lake/**/*.parquet"):
        region = path.relative_to(home).parts[1]
        customers = pl.read_parquet(path, columns=None)
        if "customer_id" in customers.columns:
            prefixes = set(customers["customer_id"].drop_nulls().str.split("-c").list.first())
            assert prefixes <= {region.replace("-", "")}, path
    for region in REGIONS:
        con = duckdb.connect(str(home / "regions" / region / "warehouse.duckdb"), read_only=True)
        prefixes = con.execute(
            "select distinct split_part(customer_id, '-c', 1) from customer_spend_features"
        ).fetchall()
        con.close()
        assert prefixes == [(region.replace("-", ""),)]


def test_rerunning_a_partition_is_idempotent(graph):
    home, instance, _ = graph
    lake_before = _lake_fingerprint(home)
    warehouse_before = _warehouse_fingerprint(home, "us-east")
    result = _materialize(instance, home, ("us-east", DAYS[1]), ("us-east", DAYS[1]))
    assert result.success
    # The region's second dbt build starts from the parse state its first one kept: the
    # run's own days and paths (environment, not --vars) leave dbt's parse valid.
    dbt_log = (home / "regions" / "us-east" / "dbt-runs" / result.run_id / "dbt.log").read_text()
    assert "Partial parsing enabled, no changes found, skipping parsing" in dbt_log
    assert _lake_fingerprint(home) == lake_before
    assert _warehouse_fingerprint(home, "us-east") == warehouse_before
    con = duckdb.connect(str(home / "regions" / "us-east" / "warehouse.duckdb"), read_only=True)
    n, distinct = con.execute(
        "select count(*), count(distinct transaction_id) from customer_spend_features"
    ).fetchall()[0]
    con.close()
    assert n == distinct


def test_a_failing_error_severity_dbt_test_blocks_the_downstream_models(graph):
    home, instance, _ = graph
    day = "2026-01-04"
    # Land a day that bypassed validation: a negative amount reaches the lake. (A repeated id
    # no longer does this: stg_transactions reconciles copies; see test_dbt_incremental.)
    lake = home / "regions" / "eu-west" / "lake"
    good = lake_day(lake, "raw_transactions", DAYS[-1]).with_columns(
        pl.col("event_time").dt.offset_by("1d"), pl.col("transaction_id") + "-moved"
    )
    bad = good.with_columns(amount=pl.when(pl.int_range(pl.len()) == 0).then(-5.0).otherwise("amount"))
    put_lake_day(lake, "raw_transactions", day, bad)
    put_lake_day(lake, "raw_labels", day, lake_day(lake, "raw_labels", DAYS[0]).head(0))
    selection = dg.AssetSelection.assets(*regional_dbt_models.keys)
    result = _materialize(instance, home, ("eu-west", day), ("eu-west", day), selection=selection)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert [(e.check_name, e.severity) for e in failed] == [
        ("meridian_positive_stg_transactions_amount_usd", dg.AssetCheckSeverity.ERROR)
    ]
    key = str(dg.MultiPartitionKey({"region": "eu-west", "day": day}))
    assert key not in instance.get_materialized_partitions(dg.AssetKey("customer_spend_features"))


def test_two_concurrent_runs_of_one_region_queue_for_its_warehouse_instead_of_failing(tmp_path: Path):
    # Regression: a UI backfill split into two runs of us-east; the second dbt build died on
    # DuckDB's file lock ("Could not set lock on file .../warehouse.duckdb").
    home = tmp_path / "home"
    results: dict[str, object] = {}

    def run(day: str) -> None:
        with dg.DagsterInstance.ephemeral() as instance:  # created and disposed in its own thread
            results[day] = _materialize(instance, home, ("us-east", day), ("us-east", day)).success

    threads = [threading.Thread(target=run, args=(day,)) for day in DAYS[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert results == {DAYS[0]: True, DAYS[1]: True}


def test_a_full_refresh_from_dagster_rebuilds_every_day_of_the_region(graph):
    """`full_refresh` (the dbt asset's config, from the launchpad): dbt --full-refresh over every
    day in the lake. A day lost from the warehouse comes back from a run of another day, which
    an incremental run (that day only) would not do."""
    home, instance, _ = graph
    region = REGIONS[0]
    warehouse = home / "regions" / region / "warehouse.duckdb"

    def per_day() -> dict[str, int]:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            rows = con.sql(
                "select event_day::varchar, count(*) from customer_spend_features group by 1 order by 1"
            ).fetchall()
        return dict(rows)

    before = per_day()
    assert sorted(before) == list(DAYS)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("delete from customer_spend_features where event_day = ?", [DAYS[0]])
    key = str(dg.MultiPartitionKey({"region": region, "day": DAYS[1]}))

    def build(full_refresh: bool):
        return dg.materialize(
            [regional_dbt_models],
            resources=_resources(home),
            instance=instance,
            partition_key=key,
            run_config={"ops": {"regional_dbt_models": {"config": {"full_refresh": full_refresh}}}},
        )

    assert build(full_refresh=False).success
    assert DAYS[0] not in per_day()  # an incremental run rebuilds its own day only
    assert build(full_refresh=True).success
    assert per_day() == before
