"""The chargeback feed covers what the service served, judged by the generator's own mechanism."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from meridian import generator as gen
from meridian import served_labels
from meridian.lake_tables import LakeLocation
from meridian.validation import validate_transactions
from resources.source import TransactionSourceResource

CFG = gen.GeneratorConfig(rows_per_day=2000, fraud_rate=0.02)
DAY = date(2026, 3, 1)


@pytest.fixture(scope="module")
def region(topology):
    return topology.region("eu-west")


def _payments(region, day: date) -> pl.DataFrame:
    """The source's own payments of a day, typed as the lake holds them, with the truth."""
    rows = validate_transactions(gen.generate_transactions(CFG, region, day).rows, day, region).accepted
    frauds = set(
        gen.generate_labels(CFG, region, day + timedelta(days=CFG.max_chargeback_delay_days)).rows[
            "transaction_id"
        ]
    )
    frauds |= {
        t
        for k in range(1, CFG.max_chargeback_delay_days)
        for t in gen.generate_labels(CFG, region, day + timedelta(days=k)).rows["transaction_id"]
    }
    return rows.with_columns(truth=pl.col("transaction_id").is_in(list(frauds)))


def test_the_fraud_probability_is_the_generators_mechanism_calibrated_on_its_own_payments(region):
    from sklearn.metrics import roc_auc_score

    payments = pl.concat([_payments(region, DAY + timedelta(days=k)) for k in range(3)])
    p = served_labels.fraud_probability(CFG, region, payments)
    truth = payments["truth"].to_numpy()  # reported frauds (95 % of frauds)
    assert roc_auc_score(truth, p) > 0.98
    # Calibrated: as many frauds expected as there are (reported ones are 95 % of them).
    assert 0.8 < truth.sum() / (p.sum() * CFG.chargeback_report_rate) < 1.25, (truth.sum(), p.sum())
    # Without the device (a request that does not send it) it still ranks frauds first.
    blind = served_labels.fraud_probability(
        CFG, region, payments.with_columns(device_id=pl.lit(None, pl.String))
    )
    assert roc_auc_score(truth, blind) > 0.95


def test_a_served_transactions_fate_is_its_own_whoever_asks(region):
    served = _payments(region, DAY).with_columns(transaction_id="srv-" + pl.col("transaction_id"))
    whole = served_labels.outcomes(CFG, region, served)
    part = served_labels.outcomes(CFG, region, served.tail(300).reverse())
    again = whole.filter(pl.col("transaction_id").is_in(part["transaction_id"].implode()))
    assert part.sort("transaction_id").equals(again.sort("transaction_id"))
    assert whole.equals(served_labels.outcomes(CFG, region, served))
    reported = whole.filter("reported")
    assert reported["is_fraud"].all() and reported.height > 10
    # Chargebacks land 1 to max_chargeback_delay_days days after the event's UTC day.
    lag = [(landed - DAY).days for landed in reported["chargeback_at"].dt.date()]
    assert min(lag) >= 1 and max(lag) <= CFG.max_chargeback_delay_days


def test_the_days_feed_holds_served_chargebacks_landing_that_day_and_never_one_twice(region):
    served = pl.concat([_payments(region, DAY - timedelta(days=k)) for k in range(1, 4)])
    renamed = served.with_columns(transaction_id="srv-" + pl.col("transaction_id"))
    # Served under the source's own ids too: those keep the source's single chargeback.
    feed = gen.generate_labels(CFG, region, DAY, pl.concat([renamed, served])).rows
    own = gen.generate_labels(CFG, region, DAY).rows
    assert feed["transaction_id"].n_unique() == feed.height
    extra = feed.filter(~pl.col("transaction_id").is_in(own["transaction_id"].implode()))
    assert extra.height > 0 and extra["transaction_id"].str.starts_with("srv-").all()
    landed = pl.col("chargeback_at").str.to_datetime(time_zone="UTC").dt.date()
    assert extra.select(landed == DAY).to_series().all()
    fate = served_labels.outcomes(CFG, region, renamed).filter(
        pl.col("reported") & (pl.col("chargeback_at").dt.date() == DAY)
    )
    assert set(extra["transaction_id"]) == set(fate["transaction_id"])


def test_hostile_served_rows_get_a_defined_probability(region):
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    odd = pl.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d", "é🙂"],
            "customer_id": ["euwest-c1", "nobody", "euwest-c2", "euwest-c3", "euwest-c4"],
            "merchant_id": ["nowhere", "euwest-m1", "euwest-m2", "euwest-m3", "euwest-m4"],
            "merchant_category": [None, "jewelry", None, "not-a-category", None],
            "amount": [1e-9, 5.0, 9.9e8, 120.0, 42.0],
            "currency": ["EUR", "EUR", "XXX", "GBP", "EUR"],
            "event_time": [at] * 5,
            "channel": ["ecom", "pos", "teleport", "contactless", "ecom"],
            "device_id": [None, "dv1", None, "", None],
            "country": ["BR", "IE", "ZZ", "FR", "IE"],
        },
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )
    p = served_labels.fraud_probability(CFG, region, odd)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert served_labels.fraud_probability(CFG, region, odd.clear()).size == 0
    no_fraud = gen.GeneratorConfig(rows_per_day=2000, fraud_rate=0.0)
    assert (served_labels.fraud_probability(no_fraud, region, odd) == 0).all()
    assert served_labels.chargebacks(CFG, region, odd.clear()).height == 0


def test_the_source_reads_what_was_served_from_the_regions_own_lake(region, tmp_path):
    lake = LakeLocation.local(tmp_path / "lake")
    table = lake.table("raw_transactions")
    served = _payments(region, DAY - timedelta(days=2)).drop("truth")
    served = served.with_columns(transaction_id="srv-" + pl.col("transaction_id"))
    table.replace(served, day=DAY - timedelta(days=2), origin="served")
    source = TransactionSourceResource(rows_per_day=2000, fraud_rate=0.02)
    with_served = source.labels(region, DAY, table).rows
    without = source.labels(region, DAY).rows
    assert set(without["transaction_id"]) < set(with_served["transaction_id"])
    nothing = LakeLocation.local(tmp_path / "nothing-served").table("raw_transactions")
    assert source.labels(region, DAY, nothing).rows.equals(without)
    # A served file truncated by a storage fault labels nothing, and stops no other chargeback.
    (path,) = (tmp_path / "lake" / "raw_transactions").glob("day=*/origin=served/*.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    assert source.labels(region, DAY, table).rows.equals(without)
