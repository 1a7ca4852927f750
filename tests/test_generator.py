from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
from meridian.payment_world import DriftSpec
from meridian.reference_data import MALFORMED_KINDS

DAY = date(2026, 1, 12)


def test_same_seed_region_and_day_give_identical_rows(topology):
    region = topology.region("eu-west")
    cfg = GeneratorConfig(rows_per_day=2_000, malformed_rate=0.02)
    a, b = generate_transactions(cfg, region, DAY), generate_transactions(cfg, region, DAY)
    assert a.rows.equals(b.rows)
    assert a.injected_malformed == b.injected_malformed
    assert generate_labels(cfg, region, DAY).rows.equals(generate_labels(cfg, region, DAY).rows)


def test_another_seed_or_day_gives_other_rows(topology):
    region = topology.region("eu-west")
    base = generate_transactions(GeneratorConfig(rows_per_day=500), region, DAY).rows
    assert not base.equals(generate_transactions(GeneratorConfig(rows_per_day=500, seed=8), region, DAY).rows)
    other_day = generate_transactions(GeneratorConfig(rows_per_day=500), region, DAY + timedelta(days=1)).rows
    assert set(base["transaction_id"]).isdisjoint(other_day["transaction_id"])


def test_a_clean_day_has_the_requested_rows_unique_ids_and_personal_columns(topology):
    rows = generate_transactions(GeneratorConfig(rows_per_day=3_000), topology.region("us-east"), DAY).rows
    assert rows.height == 3_000
    assert rows["transaction_id"].n_unique() == 3_000
    assert rows.null_count().sum_horizontal().item() == 0
    assert rows["email"].str.contains("@").all()
    assert rows["card_fingerprint"].str.starts_with("fp").all()
    assert set(rows["currency"]) == {"USD"}


def test_regions_have_their_own_currencies_countries_and_customers(topology):
    cfg = GeneratorConfig(rows_per_day=3_000)
    us = generate_transactions(cfg, topology.region("us-east"), DAY).rows
    eu = generate_transactions(cfg, topology.region("eu-west"), DAY).rows
    assert set(eu["currency"]) <= {"EUR", "GBP"} and "EUR" in set(eu["currency"])
    assert set(us["customer_id"]).isdisjoint(eu["customer_id"])
    home_eu = eu.filter(pl.col("country").is_in(["IE", "GB", "FR", "ES", "NL"])).height
    assert home_eu / eu.height > 0.9


def test_timestamps_follow_a_daily_cycle_in_local_time(topology):
    rows = generate_transactions(GeneratorConfig(rows_per_day=20_000), topology.region("us-east"), DAY).rows
    hours = rows["event_time"].str.slice(11, 2).cast(pl.Int32)
    per_hour = np.bincount(hours.to_numpy(), minlength=24)
    # New York is UTC-5 in January: the 19:00 local evening peak is at 00 UTC, the 04:00 local trough at 09 UTC.
    assert per_hour[0] > 3 * per_hour[9]


def test_fraud_is_bursty_uses_new_devices_and_lands_as_late_chargebacks(topology):
    region = topology.region("us-east")
    cfg = GeneratorConfig(rows_per_day=5_000, fraud_rate=0.02, chargeback_report_rate=1.0)
    days = [DAY + timedelta(days=i) for i in range(cfg.max_chargeback_delay_days + 1)]
    fraud_day = generate_transactions(cfg, region, DAY).rows
    labels = pl.concat([generate_labels(cfg, region, d).rows for d in days])
    fraud_ids = set(labels["transaction_id"]) & set(fraud_day["transaction_id"])
    # Every fraud of DAY is charged back within the delay window, never on the same day.
    assert len(fraud_ids) == round(5_000 * 0.02)
    assert (
        generate_labels(cfg, region, DAY)
        .rows.filter(pl.col("transaction_id").is_in(list(fraud_ids)))
        .is_empty()
    )
    fraud = fraud_day.filter(pl.col("transaction_id").is_in(list(fraud_ids)))
    legit = fraud_day.filter(~pl.col("transaction_id").is_in(list(fraud_ids)))
    assert fraud["customer_id"].n_unique() < fraud.height / 2  # bursts: several per stolen card
    assert (fraud["channel"] == "ecom").mean() > 0.7 > (legit["channel"] == "ecom").mean()
    assert fraud["amount"].median() > legit["amount"].median()


def test_chargebacks_only_reference_transactions_since_history_start(topology):
    region = topology.region("ap-southeast")
    cfg = GeneratorConfig(rows_per_day=2_000, history_start=DAY)
    assert generate_labels(cfg, region, DAY).rows.is_empty()
    labels = generate_labels(cfg, region, DAY + timedelta(days=3)).rows
    known = pl.concat([generate_transactions(cfg, region, DAY + timedelta(days=i)).rows for i in range(3)])
    assert labels.height > 0
    assert set(labels["transaction_id"]) <= set(known["transaction_id"])
    with pytest.raises(ValueError, match="before the generator's history_start"):
        generate_transactions(cfg, region, DAY - timedelta(days=1))


def test_drift_shifts_only_the_chosen_region_from_the_chosen_day(topology):
    eu, us = topology.region("eu-west"), topology.region("us-east")
    plain = GeneratorConfig(rows_per_day=5_000)

    def rows(features, region, day):
        drift = DriftSpec(start_day=DAY, regions=("eu-west",), features=features, magnitude=1.0)
        return generate_transactions(GeneratorConfig(rows_per_day=5_000, drift=drift), region, day).rows

    base = generate_transactions(plain, eu, DAY).rows
    assert rows(("amount",), eu, DAY)["amount"].mean() > 1.8 * base["amount"].mean()
    assert (rows(("channel",), eu, DAY)["channel"] == "ecom").mean() > 1.5 * (
        base["channel"] == "ecom"
    ).mean()
    shifted = rows(("category",), eu, DAY)["merchant_category"].is_in(["electronics", "digital_goods"]).mean()
    assert shifted > 1.5 * base["merchant_category"].is_in(["electronics", "digital_goods"]).mean()
    before = DAY - timedelta(days=1)
    assert rows(("amount", "channel", "category"), eu, before).equals(
        generate_transactions(plain, eu, before).rows
    )
    assert rows(("amount", "channel", "category"), us, DAY).equals(generate_transactions(plain, us, DAY).rows)


def test_malformed_injection_adds_every_kind_on_top_of_the_clean_rows(topology):
    region = topology.region("us-east")
    cfg = GeneratorConfig(rows_per_day=2_000, malformed_rate=0.05)
    batch = generate_transactions(cfg, region, DAY)
    assert set(batch.injected_malformed) == set(MALFORMED_KINDS)
    assert batch.rows.height == 2_000 + batch.injected_total == 2_100
    clean = generate_transactions(GeneratorConfig(rows_per_day=2_000), region, DAY).rows
    assert clean.join(batch.rows, on=clean.columns, how="anti").is_empty()


def test_bad_options_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="rows_per_day"):
        GeneratorConfig(rows_per_day=0)
    with pytest.raises(ValueError, match="fraud_rate"):
        GeneratorConfig(fraud_rate=0.9)
    with pytest.raises(ValueError, match="malformed_rate"):
        GeneratorConfig(malformed_rate=-0.1)
    with pytest.raises(ValueError, match=r"rows_per_day must be in \[1, 5,000,000\], got 1,000,000,000"):
        GeneratorConfig(rows_per_day=10**9)  # a zero too many: GBs for one partition
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        GeneratorConfig(seed=-1)
    for magnitude in (float("nan"), float("inf"), -5.0, 1e300):
        # before: NaN and inf failed mid-generation ("Probabilities contain NaN"), 1e300 made
        # amounts of 1e303
        with pytest.raises(ValueError, match=r"drift magnitude must be a number in \[0, 10\]"):
            DriftSpec(start_day=DAY, regions=("eu-west",), magnitude=magnitude)
    with pytest.raises(ValueError, match=r"drift features \['amout'\]: each must be one of"):
        DriftSpec(start_day=DAY, regions=("eu-west",), features=("amout",))  # before: drifted nothing


def test_the_source_resource_refuses_a_bad_option_naming_it_before_any_row():
    """The launchpad's config for the generator: every option checked where it is read."""
    import pydantic

    from resources.source import TransactionSourceResource

    for option, value in (
        ("drift_magnitude", float("nan")),
        ("drift_magnitude", 11.0),
        ("seed", -1),
        ("rows_per_day", 10**9),
        ("fraud_rate", float("nan")),
    ):
        with pytest.raises(pydantic.ValidationError, match=option):
            TransactionSourceResource(**{option: value})
    drifting = {"drift_regions": ["eu-west"], "drift_start_day": "2026-01-12"}
    for config, message in (
        (
            {**drifting, "drift_regions": ["mars-north"]},
            r"drift_regions names unknown region\(s\) \['mars-north'\]",
        ),
        (
            {**drifting, "drift_start_day": "2026-13-01"},
            "drift_start_day must be a day as YYYY-MM-DD, got '2026-13-01'",
        ),
        ({"history_start": "yesterday"}, "history_start must be a day as YYYY-MM-DD, got 'yesterday'"),
        ({**drifting, "drift_features": []}, "at least one is needed"),
    ):
        with pytest.raises(ValueError, match=message):
            TransactionSourceResource(**config).config()
    assert TransactionSourceResource(**drifting).config().drift.regions == ("eu-west",)


def test_a_region_in_a_half_hour_zone_keeps_its_local_daily_cycle(topology):
    """The same draws for a region in UTC and in Asia/Kolkata (+05:30) are the same local
    times of day (before: the offset was rounded to +06:00, the cycle 30 minutes off)."""
    utc = topology.region("eu-west").model_copy(update={"timezone": "UTC"})
    kolkata = utc.model_copy(update={"timezone": "Asia/Kolkata"})

    def local_micros(region, shift_s: int) -> np.ndarray:
        rows = generate_transactions(GeneratorConfig(rows_per_day=2_000), region, DAY).rows
        times = rows["event_time"].str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us")
        micros = times.dt.epoch("us").to_numpy() + shift_s * 1_000_000
        return np.sort(micros % 86_400_000_000)

    gap = np.abs(local_micros(kolkata, 5 * 3600 + 1800) - local_micros(utc, 0))
    assert gap.max() <= 1  # the same microseconds of the local day, to a rounding
