from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
from meridian.governance import load_policy
from meridian.validation import (
    MAX_CLOCK_SKEW,
    MAX_LATENESS,
    TRANSACTION_IDENTITY,
    EventTimeOutOfRange,
    SchemaError,
    accepted_conflicts,
    check_event_time,
    validate_labels,
    validate_transactions,
)

DAY = date(2026, 1, 12)
KIND_TO_REASON = {
    "null_customer_id": "missing customer_id",
    "negative_amount": "amount is not positive",
    "absurd_amount": "amount above 1,000,000 USD",
    "unparseable_timestamp": "unparseable event_time",
    "future_timestamp": "event_time after the partition day (future timestamp)",
    "unknown_currency": "currency: not one of the region's ['EUR', 'GBP']",
}


def test_every_injected_malformed_row_is_quarantined_with_its_reason(topology):
    region = topology.region("eu-west")
    batch = generate_transactions(GeneratorConfig(rows_per_day=3_000, malformed_rate=0.03), region, DAY)
    result = validate_transactions(batch.rows, DAY, region)
    assert result.accepted.height + result.quarantined.height == batch.rows.height
    reasons = result.reasons()
    conflicting = {r: n for r, n in reasons.items() if r.startswith("conflicting copies")}
    expected = {KIND_TO_REASON[k]: n for k, n in batch.injected_malformed.items() if k in KIND_TO_REASON}
    assert {r: n for r, n in reasons.items() if r not in conflicting} == expected
    # A copy of one transaction's content under another's id takes the genuine row with it:
    # neither is accepted, whichever came first.
    copies = batch.injected_malformed["duplicate_transaction_id"]
    assert sum(conflicting.values()) > copies
    assert result.accepted.height == 3_000 - (sum(conflicting.values()) - copies)
    assert result.accepted["transaction_id"].n_unique() == result.accepted.height
    assert accepted_conflicts(batch.rows, result.accepted, TRANSACTION_IDENTITY) == 0


def _with_row(rows: pl.DataFrame, index: int, **values) -> pl.DataFrame:
    return pl.concat([rows, rows[index].with_columns(**{k: pl.lit(v) for k, v in values.items()})])


def test_conflicting_copies_are_all_quarantined_whatever_their_order(topology):
    """Before: the first copy of an id was accepted, so the order decided whose content the id held."""
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=40), region, DAY).rows
    victim = rows["transaction_id"][3]
    forged = rows[7].with_columns(transaction_id=pl.lit(victim))  # another payment under victim's id
    for ordered in (pl.concat([rows, forged]), pl.concat([forged, rows])):
        result = validate_transactions(ordered, DAY, region)
        assert victim not in result.accepted["transaction_id"].to_list()
        held = result.quarantined.filter(pl.col("transaction_id") == victim)
        assert held.height == 2
        assert held["reason"].unique().to_list() == [
            "conflicting copies of transaction_id (2 versions): none accepted"
        ]
        assert result.accepted.height == 39
        assert accepted_conflicts(ordered, result.accepted, TRANSACTION_IDENTITY) == 0


def test_identical_copies_are_one_transaction(topology):
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=40), region, DAY).rows
    result = validate_transactions(pl.concat([rows, rows[5], rows[5]]), DAY, region)
    assert result.accepted.height == 40
    assert result.reasons() == {"duplicate transaction_id (identical copy of an accepted row)": 2}


def test_the_reconciliation_measure_sees_an_accepted_conflict(topology):
    """accepted_conflicts is computed from input and output, so it fails a rule gone wrong."""
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=20), region, DAY).rows
    forged = pl.concat([rows, rows[1].with_columns(transaction_id=pl.lit(rows["transaction_id"][0]))])
    wrongly_accepted = validate_transactions(rows, DAY, region).accepted  # as the old first-wins rule did
    assert accepted_conflicts(forged, wrongly_accepted, TRANSACTION_IDENTITY) == 1


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("channel", None, "missing channel"),
        ("country", None, "missing country"),
        ("country", "ZZZZ", "country: not an ISO 3166-1 alpha-2 code"),
        ("country", "ZZ", "country: not an ISO 3166-1 alpha-2 code"),
        ("customer_id", "euwest-c12", "customer_id: not a customer of us-east (ids start with 'useast-')"),
        ("merchant_category", "casino", "merchant_category: not a known category"),
        ("amount", "inf", "amount is not finite"),
        ("channel", "atm", "channel: not one of ['pos', 'contactless', 'ecom']"),
    ],
)
def test_every_column_is_validated_and_the_reason_names_it(topology, column, value, reason):
    """Before: null channel or country, a non-ISO country and another region's customer were accepted."""
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=30), region, DAY).rows
    bad = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(value, dtype=pl.String))
        .otherwise(pl.col(column))
        .alias(column)
    )
    result = validate_transactions(bad, DAY, region)
    assert result.reasons() == {reason: 1}
    assert result.accepted.height == 29


def test_event_times_outside_the_accepted_window_are_refused_with_the_bound():
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    assert check_event_time(now + MAX_CLOCK_SKEW - timedelta(seconds=1), now) <= now + MAX_CLOCK_SKEW
    assert check_event_time(datetime(2026, 3, 1), now) == datetime(2026, 3, 1, tzinfo=UTC)  # naive = UTC
    for far in (
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime.max,
        now + MAX_CLOCK_SKEW + timedelta(seconds=1),
    ):
        with pytest.raises(EventTimeOutOfRange, match="ahead of the receiving clock"):
            check_event_time(far, now)
    for old in (datetime(1, 1, 1, tzinfo=UTC), datetime.min, datetime(2025, 12, 31, 23, 59, tzinfo=UTC)):
        with pytest.raises(EventTimeOutOfRange, match="oldest event"):
            check_event_time(old, now)


def test_the_lateness_bound_is_the_lake_retention_of_raw_transactions():
    assert MAX_LATENESS.days == load_policy().tables["raw_transactions"].retention_days


def test_accepted_rows_are_typed(topology):
    region = topology.region("us-east")
    batch = generate_transactions(GeneratorConfig(rows_per_day=200), region, DAY)
    accepted = validate_transactions(batch.rows, DAY, region).accepted
    assert accepted.schema["event_time"] == pl.Datetime("us", "UTC")
    assert accepted.schema["amount"] == pl.Float64
    assert accepted["event_time"].dt.date().unique().to_list() == [DAY]


def test_a_currency_valid_elsewhere_but_not_in_the_region_is_quarantined(topology):
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=50), region, DAY).rows
    rows = rows.with_columns(
        currency=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("EUR")).otherwise("currency")
    )
    result = validate_transactions(rows, DAY, region)
    assert result.reasons() == {"currency: not one of the region's ['USD']": 1}


def test_rows_from_another_day_are_quarantined_not_silently_moved(topology):
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=50), region, DAY).rows
    result = validate_transactions(rows, date(2026, 1, 13), region)
    assert result.accepted.is_empty()
    assert result.reasons() == {"event_time before the partition day": 50}


def test_missing_columns_fail_the_batch_with_the_columns_named(topology):
    rows = generate_transactions(GeneratorConfig(rows_per_day=10), topology.region("us-east"), DAY).rows
    with pytest.raises(SchemaError, match=r"missing columns \['amount'\]"):
        validate_transactions(rows.drop("amount"), DAY, topology.region("us-east"))


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
        "duplicate transaction_id (identical copy of an accepted row)",
    }
    assert result.accepted["transaction_id"].n_unique() == result.accepted.height


def test_other_dtypes_and_offsets_are_validated_not_crashed_on(topology):
    """A source that sends integers, typed datetimes in another zone, or ISO times with an
    offset is validated by value; an offset moves the UTC day, as it should."""
    from datetime import timezone

    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=6), region, DAY).rows
    texts = rows.with_columns(
        event_time=pl.Series(["2026-01-12T05:00:00-05:00", "2026-01-12T23:30:00-05:00", "garbage"] * 2)
    )
    result = validate_transactions(texts, DAY, region)
    assert result.accepted.height == 2
    assert result.accepted["event_time"].dt.hour().to_list() == [10, 10]
    assert result.reasons() == {
        "event_time after the partition day (future timestamp)": 2,
        "unparseable event_time": 2,
    }
    tokyo = timezone(timedelta(hours=9))
    typed = rows.with_columns(
        transaction_id=pl.Series(range(6)),
        amount=pl.Series([1, 2, 3, 4, 5, 6]),
        event_time=pl.Series([datetime(2026, 1, 12, 9, tzinfo=tokyo)] * 6),
    )
    accepted = validate_transactions(typed, DAY, region).accepted
    assert accepted.height == 6 and accepted["event_time"].dt.hour().unique().to_list() == [0]
    assert accepted.schema["transaction_id"] == pl.String and accepted["amount"].sum() == 21.0


def test_an_amount_is_a_number_or_number_text_never_a_boolean(topology):
    """Text amounts padded as a spreadsheet exports them parse; a boolean column (from a
    typed source) is not an amount of 1.0, and neither is a date: they are quarantined."""
    region = topology.region("us-east")
    rows = generate_transactions(GeneratorConfig(rows_per_day=4), region, DAY).rows
    padded = rows.with_columns(amount=pl.Series([" 12.50 ", "7\t", "\u00a03", "1 000"]))
    result = validate_transactions(padded, DAY, region)
    assert sorted(result.accepted["amount"].to_list()) == [3.0, 7.0, 12.5]
    assert result.reasons() == {"amount is not a number": 1}  # "1 000": a thousands separator
    for values in ([True, True, False, True], [DAY] * 4):
        result = validate_transactions(rows.with_columns(amount=pl.Series(values)), DAY, region)
        assert result.accepted.height == 0 and result.reasons() == {"amount is not a number": 4}
