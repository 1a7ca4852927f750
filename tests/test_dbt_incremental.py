"""The feature models give the same rows built in one full run or day by day."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from meridian.generator import GeneratorConfig
from meridian.paths import region_paths
from tests.helpers import day_range, dbt, write_lake

TABLES = {
    "customer_spend_features": "transaction_id",
    "merchant_risk_features": "merchant_id, as_of_day",
    "labelled_events": "transaction_id",
}


def _source_day(table, day) -> pl.DataFrame:
    """The source's rows of one day of a lake table, without the partition columns."""
    return table.read(where={"day": day, "origin": "source"}).drop("day", "origin")


@pytest.fixture(scope="module")
def built(tmp_path_factory, topology):
    """One lake; one warehouse built in a full run, one built day by day."""
    home = tmp_path_factory.mktemp("home")
    region = topology.region("eu-west")
    paths = region_paths(region, home)
    # A short chargeback delay makes late labels cross several daily runs within 5 days.
    cfg = GeneratorConfig(rows_per_day=800, fraud_rate=0.04, max_chargeback_delay_days=3, malformed_rate=0.01)
    days = day_range(date(2026, 1, 1), 5)
    write_lake(paths, region, cfg, days)
    base = {"region": region.name, "lake_root": str(paths.lake), "label_lookback_days": 3}
    full = home / "full.duckdb"
    run = dbt(["build"], {**base, "warehouse_path": str(full)}, home / "target-full")
    assert run.returncode == 0, run.stdout[-3000:]
    daily = home / "daily.duckdb"
    for day in days:
        d = day.isoformat()
        run = dbt(
            ["build"],
            {**base, "warehouse_path": str(daily), "min_day": d, "max_day": d},
            home / "target-daily",
        )
        assert run.returncode == 0, run.stdout[-3000:]
    return full, daily


@pytest.mark.parametrize("table", list(TABLES))
def test_a_day_by_day_build_equals_the_full_build(built: tuple[Path, Path], table: str):
    full, daily = built
    con = duckdb.connect(str(full), read_only=True)
    con.execute(f"attach '{daily}' as daily (read_only)")
    n_full = con.execute(f"select count(*) from {table}").fetchall()[0][0]
    n_daily = con.execute(f"select count(*) from daily.{table}").fetchall()[0][0]
    only_full = con.execute(f"select count(*) from (from {table} except all from daily.{table})").fetchall()[
        0
    ][0]
    only_daily = con.execute(f"select count(*) from (from daily.{table} except all from {table})").fetchall()[
        0
    ][0]
    assert n_full > 0
    assert (n_full, only_full, only_daily) == (n_daily, 0, 0)


def test_late_chargebacks_reach_transactions_built_on_earlier_days(built: tuple[Path, Path]):
    _, daily = built
    con = duckdb.connect(str(daily), read_only=True)
    late = con.execute(
        "select count(*) from labelled_events where is_fraud and label_day > event_day + 1"
    ).fetchall()[0][0]
    assert late > 0


def test_merchant_risk_only_counts_chargebacks_landed_before_the_day(built: tuple[Path, Path]):
    full, _ = built
    con = duckdb.connect(str(full), read_only=True)
    leaks = con.execute(
        """
        select count(*) from merchant_risk_features m
        where m.chargebacks_known_30d > (
            select count(*) from labelled_events l
            where l.merchant_id = m.merchant_id and l.is_fraud and l.label_day < m.as_of_day
        )
        """
    ).fetchall()[0][0]
    assert leaks == 0
    assert con.execute("select max(chargebacks_known_30d) from merchant_risk_features").fetchall()[0][0] > 0


def test_the_dbt_project_runs_on_its_own_from_meridian_home(built: tuple[Path, Path]):
    full, _ = built
    home = full.parent  # the module's MERIDIAN_HOME: regions/eu-west/lake was written there
    env = {**os.environ, "MERIDIAN_HOME": str(home)}
    run = dbt(["build"], {"region": "eu-west"}, home / "target-standalone", env=env)
    assert run.returncode == 0, run.stdout[-3000:]
    con = duckdb.connect(str(home / "regions" / "eu-west" / "warehouse.duckdb"), read_only=True)
    standalone = con.execute("select count(*) from customer_spend_features").fetchall()[0][0]
    con.close()
    assert (
        standalone
        == duckdb.connect(str(full), read_only=True)
        .execute("select count(*) from customer_spend_features")
        .fetchall()[0][0]
    )


def test_point_in_time_retrieval_on_the_region_warehouse_serves_each_transactions_own_features(
    built: tuple[Path, Path],
):
    from meridian.feature_views import feature_views
    from meridian.retrieval import retrieve

    full, _ = built
    con = duckdb.connect(str(full), read_only=True)
    views = feature_views()
    got = retrieve(
        con,
        "select transaction_id, customer_id, merchant_id, event_time from labelled_events",
        "event_time",
        views,
    )
    n_events = con.execute("select count(*) from labelled_events").fetchall()[0][0]
    assert got.count("*").fetchall()[0][0] == n_events
    # Customer spend rows are per transaction: each transaction must get its own row's counts
    # unless two transactions of a customer share a timestamp.
    mismatches = con.sql(
        """
        select count(*) from got g join customer_spend_features f using (transaction_id)
        where g.customer_spend__txn_count_30d != f.txn_count_30d
          and not exists (select 1 from customer_spend_features o
                          where o.customer_id = f.customer_id and o.event_time = f.event_time
                            and o.transaction_id != f.transaction_id)
        """
    ).fetchall()[0][0]
    assert mismatches == 0
    assert con.sql("select count(*) from got where merchant_risk__feature_time is null").fetchall()[0][0] == 0


@pytest.fixture(scope="module")
def long_history(tmp_path_factory, topology):
    """A warehouse over the views' warm-up and then some: 56 days of a small eu-west lake."""
    from tests.helpers import trainable_days

    home = tmp_path_factory.mktemp("long")
    region = topology.region("eu-west")
    paths = region_paths(region, home)
    cfg = GeneratorConfig(rows_per_day=250, fraud_rate=0.04)
    days = [date.fromisoformat(d) for d in trainable_days(6)]
    write_lake(paths, region, cfg, days)
    warehouse = home / "warehouse.duckdb"
    base = {"region": region.name, "lake_root": str(paths.lake), "warehouse_path": str(warehouse)}
    run = dbt(["build"], base, home / "target")
    assert run.returncode == 0, run.stdout[-3000:]
    return warehouse, days


def test_the_training_set_holds_only_matured_labels_of_full_windows_split_by_time(long_history, topology):
    """Matured labels only, and only rows whose every feature window history covers: a row less
    than the views' warm-up after the first day carries truncated 30-day windows (a value the
    same customer never has in steady state) and is never trained on."""
    from meridian.feature_store import complete_from, warmup_of
    from meridian.feature_views import feature_views
    from meridian.modeling import TRANSACTION_FEATURES
    from meridian.training_set import build_training_set, warmup_excluded_rows

    warehouse, days = long_history
    views = feature_views()
    con = duckdb.connect(str(warehouse), read_only=True)
    frame, plan, as_of = build_training_set(con, views, topology.region("eu-west"))
    warm_from = complete_from(days[0], views)
    assert warmup_of(views).days == 40 and warm_from.date() == days[40]
    assert frame.height > 0 and frame["event_time"].min() >= warm_from
    assert plan.train_days[0] == days[40] and plan.test_days[1] == days[45]
    assert (frame["event_time"] <= as_of).all()
    matured = con.execute(
        "select count(*) from labelled_events where label_matures_at <= ? and event_time >= ?",
        [as_of, warm_from],
    ).fetchall()[0][0]
    assert frame.height == matured
    excluded = warmup_excluded_rows(con, views, as_of)
    assert excluded > 30 * 250  # the 40 warm-up days' matured rows, all left out
    # Full windows: every customer's 30-day count includes at least the transaction itself,
    # and the windows reach back past the first day's boundary for none of the rows.
    assert frame["customer_spend__txn_count_30d"].min() >= 1
    # Request features come from the transaction itself; eu-west's home countries are not foreign.
    assert frame.select(TRANSACTION_FEATURES).null_count().sum_horizontal().item() == 0
    assert 0 < frame["is_foreign"].mean() < 0.2 and frame["local_hour"].is_between(0, 23).all()
    # Splits are consecutive day ranges: every train day precedes every validation day, and so on.
    split_days = {s: frame.filter(pl.col("split") == s)["event_day"] for s in ("train", "validation", "test")}
    assert (
        split_days["train"].max()
        < split_days["validation"].min()
        <= split_days["validation"].max()
        < split_days["test"].min()
    )
    # No feature comes from after the transaction it describes.
    for view in views:
        times = frame[view.column("feature_time")].drop_nulls()
        assert (times <= frame.filter(pl.col(view.column("feature_time")).is_not_null())["event_time"]).all()


def test_a_history_shorter_than_the_warm_up_is_not_trained_on_and_says_why(
    built: tuple[Path, Path], topology
):
    from meridian.feature_views import feature_views
    from meridian.training_set import NotEnoughHistory, build_training_set

    full, _ = built
    con = duckdb.connect(str(full), read_only=True)
    with pytest.raises(NotEnoughHistory, match=r"after the feature warm-up \(from 2026-02-10, 40 days after"):
        build_training_set(con, feature_views(), topology.region("eu-west"), as_of=datetime(2026, 1, 16))


def test_a_time_split_needs_three_days_and_says_so():
    from datetime import date as _date

    from meridian.training_set import NotEnoughHistory, plan_time_split

    with pytest.raises(NotEnoughHistory, match="at least 3 days"):
        plan_time_split([_date(2026, 1, 1), _date(2026, 1, 2)])
    plan = plan_time_split([_date(2026, 1, d) for d in range(1, 21)])
    assert plan.train_days == (_date(2026, 1, 1), _date(2026, 1, 14))
    assert plan.validation_days == (_date(2026, 1, 15), _date(2026, 1, 17))
    assert plan.test_days == (_date(2026, 1, 18), _date(2026, 1, 20))


def test_a_transaction_id_in_two_files_or_on_two_days_is_reconciled_never_blocking(tmp_path, topology):
    """Before: an id the service logged on a second event day (or next to the source's copy)
    failed dbt's error-severity unique test and blocked the region until the lake was cleaned.
    Now the copies that agree are one transaction (the source's kept), copies that disagree
    are all left out and listed in transaction_id_conflicts (a warning), and the build passes."""
    region = topology.region("eu-west")
    paths = region_paths(region, tmp_path)
    days = day_range(date(2026, 1, 1), 3)
    write_lake(paths, region, GeneratorConfig(rows_per_day=300), days)
    table = paths.lake_table("raw_transactions")
    source0, source1 = (_source_day(table, d) for d in days[:2])
    agreeing = source0[0:2].with_columns(email=None, card_fingerprint=None)  # as the service logs them
    moved = source0[2:3].with_columns(event_time=pl.col("event_time") + pl.duration(days=1))  # on day 1
    # The service logged the same payment in day 0 (same identity) before or after the source.
    table.replace(agreeing, day=days[0], origin="served")
    table.replace(moved, day=days[1], origin="served")
    run = dbt(
        ["build"],
        {"region": region.name, "lake_root": str(paths.lake), "warehouse_path": str(tmp_path / "w.duckdb")},
        tmp_path / "target",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "WARN" in run.stdout and "meridian_no_rows_transaction_id_conflicts" in run.stdout
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    ids = [r[0] for r in con.execute("select transaction_id from stg_transactions").fetchall()]
    assert len(ids) == len(set(ids)) == source0.height + source1.height + 300 - 1
    kept = con.execute(
        "select email from stg_transactions where transaction_id in (?, ?)", list(agreeing["transaction_id"])
    ).fetchall()
    assert sorted(r[0] for r in kept) == sorted(agreeing.join(source0, on="transaction_id")["email_right"])
    conflicts = con.execute(
        "select transaction_id, versions, lake_partition from transaction_id_conflicts order by 3"
    ).fetchall()
    assert conflicts == [
        (moved["transaction_id"][0], 2, "day=2026-01-01/origin=source"),
        (moved["transaction_id"][0], 2, "day=2026-01-02/origin=served"),
    ]
    assert moved["transaction_id"][0] not in ids


def test_a_conflicting_copy_arriving_later_rebuilds_the_days_built_with_the_original(tmp_path, topology):
    """A copy of a day-0 transaction, with other content, lands on day 2 after days 0-2 were
    built. Building day 2 alone leaves day 0's features holding a transaction that is no
    longer in stg_transactions (and the day's tests, which judge day 2, do not see it); the
    dbt asset finds the first stale day (first_stale_day) and builds from there."""
    from assets.transforms import first_stale_day

    region = topology.region("eu-west")
    paths = region_paths(region, tmp_path)
    days = day_range(date(2026, 1, 1), 3)
    write_lake(paths, region, GeneratorConfig(rows_per_day=300), days)
    base = {"region": region.name, "lake_root": str(paths.lake), "warehouse_path": str(tmp_path / "w.duckdb")}
    assert dbt(["build"], base, tmp_path / "target").returncode == 0
    lake = paths.lake_location
    assert first_stale_day(tmp_path / "w.duckdb", days[2].isoformat(), lake) is None
    day0 = _source_day(paths.lake_table("raw_transactions"), days[0])
    forged = day0[0:1].with_columns(
        event_time=pl.col("event_time") + pl.duration(days=2), amount=pl.lit(999.0)
    )
    paths.lake_table("raw_transactions").replace(forged, day=days[2], origin="served")
    d2 = days[2].isoformat()
    stale = first_stale_day(tmp_path / "w.duckdb", d2, lake)
    assert stale == days[0].isoformat()
    forged_id = forged["transaction_id"][0]

    def count(table: str) -> int:
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
            return con.execute(
                f"select count(*) from {table} where transaction_id = ?", [forged_id]
            ).fetchone()[0]

    only_day2 = dbt(["build"], {**base, "min_day": d2, "max_day": d2}, tmp_path / "target")
    assert only_day2.returncode == 0, only_day2.stdout[-3000:]
    assert (count("stg_transactions"), count("customer_spend_features")) == (0, 1)  # why the rebuild
    assert first_stale_day(tmp_path / "w.duckdb", d2, lake) == days[0].isoformat()  # ... and it is seen
    full_tests = dbt(["test"], base, tmp_path / "target")  # every day judged: the stale row fails
    assert full_tests.returncode != 0 and "relationships" in full_tests.stdout
    rebuilt = dbt(["build"], {**base, "min_day": stale, "max_day": d2}, tmp_path / "target")
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    for table in ("stg_transactions", "customer_spend_features", "labelled_events"):
        assert (
            con.execute(f"select count(*) from {table} where transaction_id = ?", [forged_id]).fetchone()[0]
            == 0
        )
    assert first_stale_day(tmp_path / "w.duckdb", d2, lake) is None


def test_a_daily_runs_tests_judge_its_own_days_and_a_full_build_every_day(tmp_path, topology):
    """dbt tests over the lake views cover the run's window (macros/test_window.sql), so a
    daily run costs what a day costs: a bad row planted on an old day, past validation,
    fails a full build's tests and never a later day's run."""
    region = topology.region("eu-west")
    paths = region_paths(region, tmp_path)
    cfg = GeneratorConfig(rows_per_day=300, fraud_rate=0.04, max_chargeback_delay_days=3)
    days = [d.isoformat() for d in day_range(date(2026, 1, 1), 3)]
    write_lake(paths, region, cfg, [date.fromisoformat(d) for d in days])
    table = paths.lake_table("raw_transactions")
    planted = _source_day(table, days[0]).with_columns(
        amount=pl.when(pl.int_range(pl.len()) == 0).then(-5.0).otherwise(pl.col("amount"))
    )
    table.replace(planted, day=days[0], origin="source")
    base = {
        "region": region.name,
        "lake_root": str(paths.lake),
        "label_lookback_days": 3,
        "warehouse_path": str(tmp_path / "warehouse.duckdb"),
    }
    daily = dbt(["build"], {**base, "min_day": days[2], "max_day": days[2]}, tmp_path / "target")
    assert daily.returncode == 0, daily.stdout[-3000:]
    full = dbt(["build"], base, tmp_path / "target")
    assert full.returncode != 0
    assert "FAIL 1 meridian_positive_stg_transactions_amount_usd" in full.stdout, full.stdout[-3000:]


def test_a_training_set_rebuilt_at_its_recorded_lake_versions_has_the_same_rows(
    long_history, topology, tmp_path
):
    """The training set records the Delta versions the warehouse was built from (the MLflow run
    carries them); after the lake moves on (a day re-delivered with other content, chargebacks
    added), a fresh warehouse built at those versions gives exactly the same rows."""
    import json
    import shutil

    from meridian.feature_views import feature_views
    from meridian.lake_sync import synced_versions
    from meridian.training_set import build_training_set

    warehouse, days = long_history
    region = topology.region("eu-west")
    paths = region_paths(region, tmp_path)
    shutil.copytree(warehouse.parent / "regions" / "eu-west" / "lake", paths.lake)  # Delta tables relocate
    shutil.copyfile(warehouse, tmp_path / "w.duckdb")
    views = feature_views()
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        recorded = synced_versions(con)
        before, _, as_of = build_training_set(con, views, region)
    assert set(recorded) == {"raw_transactions", "raw_labels"}

    # The lake moves on: a train day's amounts re-delivered doubled, and every label of a day dropped.
    table = paths.lake_table("raw_transactions")
    day = days[42].isoformat()
    table.replace(_source_day(table, day).with_columns(pl.col("amount") * 2), day=day, origin="source")
    labels = paths.lake_table("raw_labels")
    labels.replace(labels.read(where={"day": days[43]}).drop("day").head(0), day=days[43])
    base = {"region": region.name, "lake_root": str(paths.lake)}
    moved = dbt(["build"], {**base, "warehouse_path": str(tmp_path / "w.duckdb")}, tmp_path / "target")
    assert moved.returncode == 0, moved.stdout[-3000:]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert synced_versions(con) == {k: v + 1 for k, v in recorded.items()}  # synced incrementally
        after, _, _ = build_training_set(con, views, region, as_of=as_of)
    assert not after.sort("transaction_id").equals(before.sort("transaction_id"))

    pinned = {**os.environ, "MERIDIAN_DBT_LAKE_VERSIONS": json.dumps(recorded)}
    rebuilt = dbt(
        ["build"], {**base, "warehouse_path": str(tmp_path / "r.duckdb")}, tmp_path / "target", pinned
    )
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    with duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True) as con:
        assert synced_versions(con) == recorded
        again, _, _ = build_training_set(con, views, region, as_of=as_of)
    assert again.sort("transaction_id").equals(before.sort("transaction_id"))
