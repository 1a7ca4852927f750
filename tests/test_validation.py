from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
from meridian.validation import SchemaError, validate_labels, validate_transactions

DAY = date(2026, 1, 12)
KIND_TO_REASON = {
    "null_customer_id": "missing customer_id",
    "negative_amount": "amount is not positive",
    "absurd_amount": "amount above 1,000,000 USD",
    "unparseable_timestamp": "unparseable event_time",
    "future_timestamp": "event_time after the partition day (future timestamp)",
    "unknown_currency": "unknown currency",
    "duplicate_transaction_id": "duplicate transaction_id",
}


def test_every_injected_malformed_row_is_quarantined_with_its_reason(topology):
    region = topology.region("eu-west")
    batch = generate_transactions(GeneratorConfig(rows_per_day=3_000, malformed_rate=0.03), region, DAY)
    result = validate_transactions(batch.rows, DAY, region.currencies)
    assert result.accepted.height + result.quarantined.height == batch.rows.height
    assert result.accepted.height == 3_000
    assert result.reasons() == {KIND_TO_REASON[k]: n for k, n in batch.injected_malformed.items()}
    assert result.accepted["transaction_id"].n_unique() == result.accepted.height


def test_accepted_rows_are_typed(topology):
    region = topology.region("us-east")
    batch = generate_transactions(GeneratorConfig(rows_per_day=200), region, DAY)
    accepted = validate_transactions(batch.rows, DAY, region.currencies).accepted
    assert accepted.schema["event_time"] == pl.Datetime("us", "UTC")
    assert accepted.schema["amount"] == pl.Float64
    assert accepted["event_time"].dt.date().unique().to_list() == [DAY]


def test_a_currency_valid_elsewhere_but_not_in_the_region_is_quarantined(topology):
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=50), region, DAY).rows
    rows = rows.with_columns(
        currency=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("EUR")).otherwise("currency")
    )
    result = validate_transactions(rows, DAY, region.currencies)
    assert result.reasons() == {"unknown currency": 1}


def test_rows_from_another_day_are_quarantined_not_silently_moved(topology):
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=50), region, DAY).rows
    result = validate_transactions(rows, date(2026, 1, 13), region.currencies)
    assert result.accepted.is_empty()
    assert result.reasons() == {"event_time before the partition day": 50}


def test_missing_columns_fail_the_batch_with_the_columns_named(topology):
    rows = generate_transactions(GeneratorConfig(rows_per_day=10), topology.region("us-east"), DAY).rows
    with pytest.raises(SchemaError, match=r"missing columns \['amount'\]"):
        validate_transactions(rows.drop("amount"), DAY)


def test_chargebacks_with_bad_rows_are_split_with_reasons(topology):
    region = topology.region("us-east")
    cfg = GeneratorConfig(rows_per_day=5_000, malformed_rate=0.1)
    batch = generate_labels(cfg, region, DAY)
    result = validate_labels(batch.rows, DAY)
    assert result.accepted.height + result.quarantined.height == batch.rows.height
    assert result.quarantined.height == batch.injected_total > 0
    assert set(result.reasons()) <= {
        "missing transaction_id",
        "unparseable chargeback_at",
        "duplicate transaction_id",
    }
    assert result.accepted["transaction_id"].n_unique() == result.accepted.height
