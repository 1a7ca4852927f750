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

from meridian.countries import ISO_COUNTRIES
from meridian.reference_data import CATEGORIES, HISTORY_START, USD_RATES
from meridian.topology import Region

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
# Anything above this (in USD) is a unit or keying error, not a purchase.
MAX_AMOUNT_USD = 1_000_000.0
TRANSACTION_REQUIRED = (
    "transaction_id",
    "customer_id",
    "merchant_id",
    "amount",
    "currency",
    "event_time",
    "channel",
    "country",
)
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
# What makes two rows with one transaction_id the same payment: every required column
# but the id itself. The source and the scoring service both deliver these (the service
# never sees e-mail or card fingerprint).
TRANSACTION_IDENTITY = tuple(c for c in TRANSACTION_REQUIRED if c != "transaction_id")
LABEL_IDENTITY = ("chargeback_at", "reason_code", "amount", "currency")

CONFLICT_REASON = "conflicting copies of transaction_id"
# Where a row was delivered (the landing zone's file key): carried through validation
# untouched when the batch has it, so reconciliation can be done per delivered file.
PROVENANCE = "source_file"

# Event times the platform accepts, from anyone (source or scoring service): at most this
# far ahead of the receiving clock (card terminals' clocks drift; minutes, not days)...
MAX_CLOCK_SKEW = timedelta(minutes=5)
# ...and no older than the lake keeps raw transactions (governance.yaml retention_days of
# raw_transactions; tests/test_validation.py holds the two equal), nor before the first
# day partition of the lake.
MAX_LATENESS = timedelta(days=730)


class EventTimeOutOfRange(ValueError):
    """An event time outside the accepted window; the message says which bound and why."""


def event_time_window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """[earliest, latest] event time accepted at `now` (UTC, aware)."""
    now = now or datetime.now(UTC)
    first_day = datetime(HISTORY_START.year, HISTORY_START.month, HISTORY_START.day, tzinfo=UTC)
    return max(first_day, now - MAX_LATENESS), now + MAX_CLOCK_SKEW


def check_event_time(at: datetime, now: datetime | None = None) -> datetime:
    """`at` as aware UTC if inside the accepted window, else EventTimeOutOfRange (never OverflowError).

    A naive time is UTC. Comparing aware datetimes never overflows, so times at the limits
    of Python's calendar (year 1, year 9999, any offset) get the same clear error.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    earliest, latest = event_time_window(now)
    if at > latest:
        raise EventTimeOutOfRange(
            f"event_time {at.isoformat()} is more than {MAX_CLOCK_SKEW} ahead of the receiving clock "
            f"({latest - MAX_CLOCK_SKEW:%Y-%m-%dT%H:%M:%SZ})"
        )
    if at < earliest:
        raise EventTimeOutOfRange(
            f"event_time {at.isoformat()} is before {earliest:%Y-%m-%dT%H:%M:%SZ}, the oldest event "
            f"the lake takes (its first day, or {MAX_LATENESS.days} days of retention)"
        )
    return at.astimezone(UTC)


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
        return reason_counts(self.quarantined)


def reason_counts(quarantined: pl.DataFrame) -> dict[str, int]:
    """Quarantined rows per reason."""
    if quarantined.is_empty():
        return {}
    grouped = quarantined.group_by("reason").len().sort("reason")
    return dict(zip(grouped["reason"].to_list(), grouped["len"].to_list(), strict=True))


def _require_columns(raw: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SchemaError(f"{what} batch is missing columns {missing}; got {raw.columns}")


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _timestamp(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column of event times as UTC, whatever form the source used.

    Text: ISO-8601 with `Z` (the contract) or with a numeric offset; a typed datetime:
    converted to UTC (naive = UTC); a date: midnight UTC. Anything else is null, which the
    rules quarantine as unparseable.
    """
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        typed = col.dt.cast_time_unit("us")
        return typed.dt.convert_time_zone("UTC") if dtype.time_zone else typed.dt.replace_time_zone("UTC")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    text = col.cast(pl.String).str.strip_chars()
    return pl.coalesce(
        text.str.to_datetime(TIMESTAMP_FORMAT, time_zone="UTC", strict=False),
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False).dt.convert_time_zone("UTC"),
    )


def _number(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column of numbers as Float64: a numeric type as it is, text parsed (padding stripped,
    as a spreadsheet export pads); anything else (a boolean, a date, a nested value) is null,
    which the rules quarantine as not a number, never 1.0 for `true`."""
    col = pl.col(column)
    if dtype.is_numeric():
        return col.cast(pl.Float64)
    if dtype == pl.String:
        return col.str.strip_chars().cast(pl.Float64, strict=False)
    return pl.lit(None, dtype=pl.Float64)


def _as_text(raw: pl.DataFrame, columns: tuple[str, ...], keep: tuple[str, ...]) -> pl.DataFrame:
    """Every column as the text a source would send, except `keep` (parsed by their own rule):
    a source that sends integers or typed values is validated, not crashed on."""
    return raw.with_columns(
        pl.col(c).cast(pl.String) for c in columns if c not in keep and raw.schema[c] != pl.String
    )


def _first_reason(rules: list[tuple[pl.Expr, str]]) -> pl.Expr:
    expr = pl.lit(None, dtype=pl.String)
    for condition, reason in reversed(rules):
        expr = pl.when(condition).then(pl.lit(reason)).otherwise(expr)
    return expr.alias("reason")


def _resolve_duplicates(frame: pl.DataFrame, identity: tuple[str, ...], among_valid: bool) -> pl.DataFrame:
    """One rule for every repeated id, whatever order the rows came in.

    Identical copies (same identity columns) are one row: the first is judged by the rules,
    later copies are quarantined as copies. Copies that disagree are all quarantined:
    nothing tells the genuine row from the one carrying another payment's content under
    its id, so none of them is accepted. `among_valid`: only copies that pass every other
    rule can disagree (chargebacks: a garbled copy does not cost the genuine label);
    otherwise every delivered copy counts (transactions: an id delivered in two forms is
    trusted in neither).
    """
    by_id = pl.col("transaction_id").is_not_null()
    content = pl.struct([pl.col(c).cast(pl.String) for c in identity])
    valid = pl.col("reason").is_null()
    versions = (content.filter(valid) if among_valid else content).n_unique().over("transaction_id")
    earlier_valid = valid.cast(pl.Int64).cum_sum().over("transaction_id") > 1
    frame = frame.with_columns(_versions=pl.when(by_id).then(versions).otherwise(1))
    return frame.with_columns(
        reason=pl.when(valid & by_id & (pl.col("_versions") > 1))
        .then(pl.format(CONFLICT_REASON + " ({} versions): none accepted", "_versions"))
        .when(valid & by_id & earlier_valid)
        .then(pl.lit("duplicate transaction_id (identical copy of an accepted row)"))
        .otherwise(pl.col("reason"))
    )


def accepted_conflicts(raw: pl.DataFrame, accepted: pl.DataFrame, identity: tuple[str, ...] | None) -> int:
    """Accepted ids that are repeated, or whose delivered rows disagree: 0 for a sound batch.

    Computed from the delivered batch and the accepted output alone (not from the rule
    that produced them), so the reconciliation check catches a rule that goes wrong.
    `identity=None`: repeated ids only.
    """
    ids = accepted["transaction_id"]
    repeated = ids.len() - ids.n_unique()
    if identity is None:
        return repeated
    delivered = raw.filter(pl.col("transaction_id").is_in(ids.implode()))
    disagreeing = (
        delivered.group_by("transaction_id")
        .agg(pl.struct([pl.col(c).cast(pl.String) for c in identity]).n_unique().alias("versions"))
        .filter(pl.col("versions") > 1)
        .height
    )
    return repeated + disagreeing


def _split(frame: pl.DataFrame, typed_columns: list[pl.Expr], raw_columns: tuple[str, ...]) -> ValidatedBatch:
    provenance = [PROVENANCE] if PROVENANCE in frame.columns else []
    accepted = frame.filter(pl.col("reason").is_null()).select(*typed_columns, *provenance)
    quarantined = frame.filter(pl.col("reason").is_not_null()).select(
        *[pl.col(c).cast(pl.String) for c in raw_columns], "reason", *provenance
    )
    if accepted.height + quarantined.height != frame.height:
        raise AssertionError("validation lost rows: accepted + quarantined != input")
    return ValidatedBatch(accepted, quarantined)


def validate_transactions(raw: pl.DataFrame, day: date, region: Region) -> ValidatedBatch:
    """Split a region-day of raw transactions into typed accepted rows and quarantined rows.

    Every column the schema and the region's topology define is checked: required values,
    the event time within the day, amount, the region's currencies, channel, ISO country,
    merchant category, and a customer id of this region (never another region's).
    """
    _require_columns(raw, TRANSACTION_COLUMNS, "transactions")
    start, end = _day_bounds(day)
    allowed = list(region.currencies)
    raw = _as_text(raw, TRANSACTION_COLUMNS, keep=("event_time", "amount"))
    frame = raw.with_columns(
        _ts=_timestamp("event_time", raw.schema["event_time"]),
        _amount=_number("amount", raw.schema["amount"]),
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
        (pl.col("_amount").is_infinite(), "amount is not finite"),
        (~pl.col("currency").is_in(allowed), f"currency: not one of the region's {sorted(allowed)}"),
        (pl.col("_amount") / pl.col("_rate") > MAX_AMOUNT_USD, f"amount above {MAX_AMOUNT_USD:,.0f} USD"),
        (~pl.col("channel").is_in(KNOWN_CHANNELS), f"channel: not one of {list(KNOWN_CHANNELS)}"),
        (~pl.col("country").is_in(sorted(ISO_COUNTRIES)), "country: not an ISO 3166-1 alpha-2 code"),
        (
            pl.col("merchant_category").is_not_null() & ~pl.col("merchant_category").is_in(CATEGORIES),
            "merchant_category: not a known category",
        ),
        (
            ~pl.col("customer_id").cast(pl.String).str.starts_with(region.customer_prefix),
            f"customer_id: not a customer of {region.name} (ids start with {region.customer_prefix!r})",
        ),
    ]
    frame = _resolve_duplicates(frame.with_columns(_first_reason(rules)), TRANSACTION_IDENTITY, False)
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
    raw = _as_text(raw, LABEL_COLUMNS, keep=("chargeback_at", "amount"))
    frame = raw.with_columns(_ts=_timestamp("chargeback_at", raw.schema["chargeback_at"]))
    rules = [
        (pl.col("transaction_id").is_null() | (pl.col("transaction_id") == ""), "missing transaction_id"),
        (pl.col("_ts").is_null(), "unparseable chargeback_at"),
        (pl.col("_ts") >= end, "chargeback_at after the partition day (future timestamp)"),
        (pl.col("_ts") < start, "chargeback_at before the partition day"),
    ]
    frame = _resolve_duplicates(frame.with_columns(_first_reason(rules)), LABEL_IDENTITY, True)
    typed = ["transaction_id", pl.col("_ts").alias("chargeback_at"), "reason_code", "amount", "currency"]
    return _split(frame, typed, LABEL_COLUMNS)
