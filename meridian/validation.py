"""Validate one source batch: every row is either accepted (typed) or quarantined with a reason.

Rules are evaluated in order and a row gets the first reason that applies, so the
quarantine table says the most basic thing wrong with it. Nothing is dropped:
`accepted.height + quarantined.height == raw.height` holds for every batch, and
`validate_*` raises if it ever would not.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from meridian.generator import USD_RATES

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
# Anything above this (in USD) is a unit or keying error, not a purchase.
MAX_AMOUNT_USD = 1_000_000.0
TRANSACTION_REQUIRED = ("transaction_id", "customer_id", "merchant_id", "amount", "currency", "event_time")
TRANSACTION_COLUMNS = (
    "transaction_id",
    "customer_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "event_time",
    "channel",
    "device_id",
    "country",
    "email",
    "card_fingerprint",
)
LABEL_COLUMNS = ("transaction_id", "chargeback_at", "reason_code", "amount", "currency")
KNOWN_CHANNELS = ("pos", "contactless", "ecom")


CURRENCY_SEED = Path(__file__).resolve().parent.parent / "dbt_project" / "seeds" / "currency_rates.csv"


def currency_rates() -> dict[str, float]:
    """Units of each currency per USD: the dbt seed the features are computed with."""
    with open(CURRENCY_SEED) as handle:
        return {row["currency"]: float(row["units_per_usd"]) for row in csv.DictReader(handle)}


class SchemaError(ValueError):
    """The batch itself is unusable (missing columns): nothing of it can be ingested."""


@dataclass(frozen=True)
class ValidatedBatch:
    accepted: pl.DataFrame
    quarantined: pl.DataFrame

    @property
    def counts(self) -> dict[str, int]:
        return {"accepted": self.accepted.height, "quarantined": self.quarantined.height}

    def reasons(self) -> dict[str, int]:
        if self.quarantined.is_empty():
            return {}
        grouped = self.quarantined.group_by("reason").len().sort("reason")
        return dict(zip(grouped["reason"].to_list(), grouped["len"].to_list(), strict=True))


def _require_columns(raw: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SchemaError(f"{what} batch is missing columns {missing}; got {raw.columns}")


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _first_reason(rules: list[tuple[pl.Expr, str]]) -> pl.Expr:
    expr = pl.lit(None, dtype=pl.String)
    for condition, reason in reversed(rules):
        expr = pl.when(condition).then(pl.lit(reason)).otherwise(expr)
    return expr.alias("reason")


def _split(frame: pl.DataFrame, typed_columns: list[pl.Expr], raw_columns: tuple[str, ...]) -> ValidatedBatch:
    accepted = frame.filter(pl.col("reason").is_null()).select(typed_columns)
    quarantined = frame.filter(pl.col("reason").is_not_null()).select(
        *[pl.col(c).cast(pl.String) for c in raw_columns], "reason"
    )
    if accepted.height + quarantined.height != frame.height:
        raise AssertionError("validation lost rows: accepted + quarantined != input")
    return ValidatedBatch(accepted, quarantined)


def validate_transactions(
    raw: pl.DataFrame, day: date, currencies: tuple[str, ...] | None = None
) -> ValidatedBatch:
    """Split a region-day of raw transactions into typed accepted rows and quarantined rows."""
    _require_columns(raw, TRANSACTION_COLUMNS, "transactions")
    start, end = _day_bounds(day)
    allowed = list(currencies) if currencies else list(USD_RATES)
    frame = raw.with_columns(
        _ts=pl.col("event_time")
        .cast(pl.String)
        .str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", strict=False),
        _amount=pl.col("amount").cast(pl.Float64, strict=False),
        _rate=pl.col("currency").replace_strict(USD_RATES, default=None, return_dtype=pl.Float64),
    )
    missing = [
        (pl.col(c).is_null() | (pl.col(c).cast(pl.String) == ""), f"missing {c}")
        for c in TRANSACTION_REQUIRED
    ]
    rules = [
        *missing,
        (pl.col("_ts").is_null(), "unparseable event_time"),
        (pl.col("_ts") >= end, "event_time after the partition day (future timestamp)"),
        (pl.col("_ts") < start, "event_time before the partition day"),
        (pl.col("_amount").is_null() | pl.col("_amount").is_nan(), "amount is not a number"),
        (pl.col("_amount") <= 0, "amount is not positive"),
        (~pl.col("currency").is_in(allowed), "unknown currency"),
        (pl.col("_amount") / pl.col("_rate") > MAX_AMOUNT_USD, f"amount above {MAX_AMOUNT_USD:,.0f} USD"),
        (~pl.col("channel").is_in(KNOWN_CHANNELS), "unknown channel"),
    ]
    frame = frame.with_columns(_first_reason(rules))
    # A duplicate id is a second valid-looking row for an id already accepted in this batch.
    dup = pl.col("reason").is_null() & (pl.col("reason").is_null().cum_sum().over("transaction_id") > 1)
    frame = frame.with_columns(
        reason=pl.when(dup).then(pl.lit("duplicate transaction_id")).otherwise(pl.col("reason"))
    )
    typed = [
        "transaction_id",
        "customer_id",
        "merchant_id",
        "merchant_category",
        pl.col("_amount").alias("amount"),
        "currency",
        pl.col("_ts").alias("event_time"),
        "channel",
        "device_id",
        "country",
        "email",
        "card_fingerprint",
    ]
    return _split(frame, typed, TRANSACTION_COLUMNS)


def validate_labels(raw: pl.DataFrame, day: date) -> ValidatedBatch:
    """Split a region-day of raw chargebacks into typed accepted rows and quarantined rows."""
    _require_columns(raw, LABEL_COLUMNS, "labels")
    start, end = _day_bounds(day)
    frame = raw.with_columns(
        _ts=pl.col("chargeback_at")
        .cast(pl.String)
        .str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", strict=False),
    )
    rules = [
        (pl.col("transaction_id").is_null() | (pl.col("transaction_id") == ""), "missing transaction_id"),
        (pl.col("_ts").is_null(), "unparseable chargeback_at"),
        (pl.col("_ts") >= end, "chargeback_at after the partition day (future timestamp)"),
        (pl.col("_ts") < start, "chargeback_at before the partition day"),
    ]
    frame = frame.with_columns(_first_reason(rules))
    dup = pl.col("reason").is_null() & (pl.col("reason").is_null().cum_sum().over("transaction_id") > 1)
    frame = frame.with_columns(
        reason=pl.when(dup).then(pl.lit("duplicate transaction_id")).otherwise(pl.col("reason"))
    )
    typed = ["transaction_id", pl.col("_ts").alias("chargeback_at"), "reason_code", "amount", "currency"]
    return _split(frame, typed, LABEL_COLUMNS)
