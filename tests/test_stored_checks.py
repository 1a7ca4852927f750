"""The standalone checks re-read what a stage stored and fail on what its contract forbids."""

from __future__ import annotations

import shutil
from datetime import date

import dagster as dg
import polars as pl
import pytest

from meridian.generator import GeneratorConfig, generate_transactions
from meridian.stored_checks import prediction_partition_problems, transaction_partition_problems
from meridian.topology import load_topology
from meridian.validation import validate_transactions

DAY = date(2026, 1, 5)
REGION = load_topology().region("eu-west")


@pytest.fixture(scope="module")
def accepted() -> pl.DataFrame:
    raw = generate_transactions(GeneratorConfig(rows_per_day=200), REGION, DAY).rows
    return validate_transactions(raw, DAY, REGION).accepted


def _set(frame: pl.DataFrame, column: str, value, rows: int = 3) -> pl.DataFrame:
    value = (
        value.cast(frame.schema[column])
        if isinstance(value, pl.Expr)
        else pl.lit(value, frame.schema[column])
    )
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) < rows).then(value).otherwise(pl.col(column)).alias(column)
    )


def test_what_ingestion_accepted_holds_the_contract_and_each_breach_is_named(accepted):
    assert transaction_partition_problems(accepted, REGION, DAY) == []
    other = load_topology().region("us-east")
    breaches = {
        "amount not a positive finite number": [
            _set(accepted, "amount", float("nan")),
            _set(accepted, "amount", float("inf")),
            _set(accepted, "amount", -1.0),
            _set(accepted, "amount", None),
        ],
        "duplicate transaction_id": [pl.concat([accepted, accepted.head(2)])],
        "currency not one of": [_set(accepted, "currency", "USD")],
        f"customer_id not of {REGION.name}": [_set(accepted, "customer_id", other.customer_prefix + "1")],
        "event_time outside 2026-01-05 (UTC)": [
            # 23:30 on the 5th in Dublin is still the 5th; 00:30 on the 6th in Singapore is the 5th in UTC;
            # 01:00 on the 5th in Singapore is the 4th in UTC.
            _set(accepted, "event_time", pl.datetime(2026, 1, 5, 1, time_zone="Asia/Singapore")),
            _set(accepted, "event_time", None),
        ],
        "unknown merchant_category": [_set(accepted, "merchant_category", "Grocery; DROP TABLE")],
        "channel not one of": [_set(accepted, "channel", "")],
    }
    for what, frames in breaches.items():
        for frame in frames:
            found = transaction_partition_problems(frame, REGION, DAY)
            assert any(what in p for p in found), (what, found)
    late_in_dublin = _set(accepted, "event_time", pl.datetime(2026, 1, 5, 23, 30, time_zone="Europe/Dublin"))
    assert transaction_partition_problems(late_in_dublin, REGION, DAY) == []
    # Types are part of the contract: a column read back as another dtype, or missing, or extra.
    assert transaction_partition_problems(
        accepted.with_columns(pl.col("amount").cast(pl.Float32)), REGION, DAY
    ) == ["column 'amount' is Float32, expected Float64"]
    naive = accepted.with_columns(pl.col("event_time").dt.replace_time_zone(None))
    assert "column 'event_time' is Datetime" in transaction_partition_problems(naive, REGION, DAY)[0]
    assert transaction_partition_problems(accepted.drop("email"), REGION, DAY) == [
        "column 'email' is missing"
    ]
    assert transaction_partition_problems(accepted.with_columns(x=1), REGION, DAY) == [
        "unexpected columns ['x']"
    ]
    assert transaction_partition_problems(accepted.clear(), REGION, DAY) == []  # an empty day is a day


def test_stored_predictions_are_one_probability_per_transaction_of_the_day():
    scores = pl.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "event_day": [DAY] * 3,
            "score": [0.0, 0.5, 1.0],
            "model_version": pl.Series([1, 1, 1], dtype=pl.Int32),
        }
    )
    assert prediction_partition_problems(scores, DAY) == []
    for column, value, what in (
        ("score", float("nan"), "score not a probability"),
        ("score", 1.5, "score not a probability"),
        ("score", None, "score not a probability"),
        ("model_version", None, "no model version"),
        ("event_day", date(2026, 1, 6), "event_day is not 2026-01-05"),
        ("transaction_id", "b", "duplicate transaction_id"),
    ):
        found = prediction_partition_problems(_set(scores, column, value, rows=1), DAY)
        assert any(what in p for p in found), (column, value, found)
    assert prediction_partition_problems(scores.drop("score"), DAY) == ["column 'score' is missing"]


def test_the_check_runs_after_ingestion_and_fails_on_a_replaced_partition(meridian_home):
    from assets.checks.ingestion import raw_transactions_stored_contract
    from assets.definitions_file import load_definitions_module
    from assets.ingestion import transactions_ingestion
    from meridian.paths import region_paths
    from tests.helpers import lake_day, put_lake_day

    resources = load_definitions_module().build_resources("local")
    key = str(dg.MultiPartitionKey({"region": REGION.name, "day": DAY.isoformat()}))
    assets = [transactions_ingestion, raw_transactions_stored_contract]
    result = dg.materialize(assets, resources=resources, partition_key=key)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    stored = evaluations["stored_partition_holds_the_contract"]
    assert stored.passed and stored.metadata["rows_checked"].value > 0
    assert stored.metadata["partitions_checked"].value == 1

    # Someone replaces the day's file: a foreign customer and a NaN amount. The check's own
    # evaluation over the partition finds both and names it. (Dagster 1.13's execute_in_process
    # cannot run a partitioned check without its asset, so the evaluator is called directly
    # with the run's partition keys, as the check calls it.)
    from types import SimpleNamespace

    from assets.checks import check_stored_partitions
    from meridian.stored_checks import transaction_partition_problems
    from resources.lake import RegionalLakeResource
    from resources.topology import RegionTopologyResource

    lake = region_paths(REGION, meridian_home).lake
    frame = lake_day(lake, "raw_transactions", DAY)
    frame = _set(_set(frame, "amount", float("nan"), rows=2), "customer_id", "useast-9", rows=1)
    put_lake_day(lake, "raw_transactions", DAY, frame)  # a commit that skipped validation
    run = SimpleNamespace(
        partition_keys=[dg.MultiPartitionKey({"region": REGION.name, "day": DAY.isoformat()})]
    )

    def check_alone() -> dg.AssetCheckResult:
        return check_stored_partitions(
            run,
            RegionTopologyResource(),
            RegionalLakeResource(),
            "raw_transactions",
            transaction_partition_problems,
        )

    evaluation = check_alone()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    found = evaluation.metadata["failures"].value[key]
    assert "2 row(s): amount not a positive finite number" in found
    assert "1 row(s): customer_id not of eu-west" in found
    newest = max(
        (lake / "raw_transactions" / f"day={DAY}" / "origin=source").glob("*.parquet"),
        key=lambda p: p.stat().st_mtime,
    )
    newest.write_bytes(b"PAR1 not really")
    assert "unreadable" in check_alone().metadata["failures"].value[key][0]
    shutil.rmtree(lake / "raw_transactions")
    evaluation = check_alone()
    assert not evaluation.passed and "no Delta table" in evaluation.metadata["failures"].value[key][0]


@pytest.mark.parametrize("rows_per_read", [250, 2_000_000])
def test_the_check_reads_days_in_bounded_batches_and_judges_each(meridian_home, monkeypatch, rows_per_read):
    """The stored-partition check reads a region's days a batch at a time, bounded by
    ROWS_PER_READ (the whole window at once peaked at 13.7 GB at 500k rows a day): each day is
    judged on its own rows whatever the batches, and a bad day is named alone."""
    from types import SimpleNamespace

    import assets.checks as checks
    from meridian.paths import region_paths
    from meridian.stored_checks import transaction_partition_problems
    from resources.lake import RegionalLakeResource
    from resources.topology import RegionTopologyResource
    from tests.helpers import day_range, lake_day, put_lake_day, write_lake

    days = day_range(DAY, 5)
    paths = region_paths(REGION, meridian_home)
    write_lake(paths, REGION, GeneratorConfig(rows_per_day=200), days[:4])  # the 5th day: none
    bad = days[2]
    put_lake_day(
        paths.lake,
        "raw_transactions",
        bad,
        _set(lake_day(paths.lake, "raw_transactions", bad), "amount", -1.0),
    )
    monkeypatch.setattr(checks, "ROWS_PER_READ", rows_per_read)
    reads = []
    real_read = type(paths.lake_table("raw_transactions")).read

    def counting_read(self, *args, **kwargs):
        reads.append(kwargs.get("where", {}).get("day"))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(type(paths.lake_table("raw_transactions")), "read", counting_read)
    run = SimpleNamespace(
        partition_keys=[dg.MultiPartitionKey({"region": REGION.name, "day": d.isoformat()}) for d in days]
    )
    evaluation = checks.check_stored_partitions(
        run,
        RegionTopologyResource(),
        RegionalLakeResource(),
        "raw_transactions",
        transaction_partition_problems,
    )
    batches = list(reads)
    stored = sum(lake_day(paths.lake, "raw_transactions", d).height for d in days[:4])
    assert evaluation.metadata["partitions_checked"].value == 5
    assert evaluation.metadata["rows_checked"].value == stored > 600
    failing = evaluation.metadata["failures"].value
    assert f"{bad}|{REGION.name}" in failing and "amount not a positive finite number" in str(failing)
    assert all(key.split("|")[0] in (bad.isoformat(), days[4].isoformat()) for key in failing), failing
    # One day first, then as many as the budget allows at the largest day seen.
    assert [len(r) for r in batches] == ([1, 1, 1, 1, 1] if rows_per_read == 250 else [1, 4])
