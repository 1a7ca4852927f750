"""What a stored lake partition must hold, checked on the file as it is now.

Ingestion and batch inference validate what they write; these functions re-read what is
stored, so a partition replaced or damaged afterwards (copied back from a replica, written
by hand, truncated) is caught by the standalone asset checks in assets/*_checks.py. Each
returns the problems found, in words; an empty list means the partition holds its contract.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from meridian.reference_data import CATEGORIES, CHANNELS
from meridian.topology import Region

# The accepted transaction rows' types (meridian/validation.py writes exactly these).
TRANSACTION_SCHEMA: dict[str, pl.DataType] = {
    "transaction_id": pl.String(),
    "customer_id": pl.String(),
    "merchant_id": pl.String(),
    "merchant_category": pl.String(),
    "amount": pl.Float64(),
    "currency": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "channel": pl.String(),
    "device_id": pl.String(),
    "country": pl.String(),
    "email": pl.String(),
    "card_fingerprint": pl.String(),
}
PREDICTION_REQUIRED: dict[str, type[pl.DataType]] = {
    "transaction_id": pl.String,
    "event_day": pl.Date,
    "score": pl.Float64,
    "model_version": pl.Int32,
}


def _schema_problems(frame: pl.DataFrame, expected: dict, exact: bool) -> list[str]:
    problems = []
    for name, dtype in expected.items():
        if name not in frame.columns:
            problems.append(f"column {name!r} is missing")
        elif (frame.schema[name] != dtype) if exact else not isinstance(frame.schema[name], dtype):
            problems.append(f"column {name!r} is {frame.schema[name]}, expected {dtype}")
    if exact:
        extra = sorted(set(frame.columns) - set(expected))
        if extra:
            problems.append(f"unexpected columns {extra}")
    return problems


def _count(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return int(frame.select(condition.fill_null(True).sum()).item())


def transaction_partition_problems(frame: pl.DataFrame, region: Region, day: date) -> list[str]:
    """A stored region-day of `raw_transactions` against the ingestion contract."""
    problems = _schema_problems(frame, TRANSACTION_SCHEMA, exact=True)
    if problems:
        return problems  # the rules below need the columns as typed
    start = datetime.combine(day, time(), tzinfo=UTC)
    rules = {
        "duplicate transaction_id": pl.col("transaction_id").is_duplicated(),
        "missing transaction_id, customer_id, merchant_id or event_time": pl.any_horizontal(
            pl.col("transaction_id", "customer_id", "merchant_id", "event_time").is_null()
        ),
        f"event_time outside {day} (UTC)": ~pl.col("event_time").is_between(
            start, start + timedelta(days=1), closed="left"
        ),
        "amount not a positive finite number": ~(pl.col("amount").is_finite() & (pl.col("amount") > 0)),
        f"currency not one of {sorted(region.currencies)}": ~pl.col("currency").is_in(
            list(region.currencies)
        ),
        f"channel not one of {list(CHANNELS)}": ~pl.col("channel").is_in(list(CHANNELS)),
        "unknown merchant_category": pl.col("merchant_category").is_not_null()
        & ~pl.col("merchant_category").is_in(list(CATEGORIES)),
        f"customer_id not of {region.name}": ~pl.col("customer_id").str.starts_with(region.customer_prefix),
    }
    for what, condition in rules.items():
        n = _count(frame, condition)
        if n:
            problems.append(f"{n} row(s): {what}")
    return problems


def prediction_partition_problems(frame: pl.DataFrame, day: date) -> list[str]:
    """A stored region-day of `predictions`: one finite probability per transaction of the day."""
    problems = _schema_problems(frame, PREDICTION_REQUIRED, exact=False)
    if problems:
        return problems
    rules = {
        "duplicate transaction_id": pl.col("transaction_id").is_duplicated(),
        f"event_day is not {day}": pl.col("event_day") != day,
        "score not a probability in [0, 1]": ~(
            pl.col("score").is_finite() & pl.col("score").is_between(0, 1)
        ),
        "no model version": ~(pl.col("model_version") > 0),
    }
    for what, condition in rules.items():
        n = _count(frame, condition)
        if n:
            problems.append(f"{n} row(s): {what}")
    return problems
