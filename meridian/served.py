"""What the scoring service logged, as lake rows: decisions, transactions, and the entries
that are neither.

One entry of the stream log (meridian.stream_log) is one response: the decision and the
transaction it scored. An entry either becomes both rows or neither: an entry that cannot
be read (a missing field, a value of the wrong type, an event time outside the accepted
window, at the limits of the calendar) is quarantined whole, with its position in the log
and the reason, and the consumer moves past it. No entry can stop the stream.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
import polars as pl

from meridian.stream_log import StreamBatch
from meridian.validation import TRANSACTION_COLUMNS, check_event_time

log = logging.getLogger("meridian.served")

DECISION_SCHEMA = {
    "request_id": pl.String,
    "served_at": pl.Datetime("us", "UTC"),
    "transaction_id": pl.String,
    "customer_id": pl.String,
    "strategy": pl.String,
    "experiment_id": pl.String,
    "challenger_share": pl.Float64,
    "variant": pl.String,
    "model_version": pl.Int64,
    "score": pl.Float64,
    "shadow_model_version": pl.Int64,
    "shadow_score": pl.Float64,
    "fallback": pl.String,
    "latency_ms": pl.Float64,
    "feature_versions": pl.String,
    "features": pl.String,
    "features_complete": pl.Boolean,
    "day": pl.String,
}
# The served transactions of event day D: raw_transactions/day=D/served.parquet, beside
# the source's data.parquet, so every reader of the table sees both.
SERVED_FILE = "served.parquet"
QUARANTINE_SCHEMA = {"segment": pl.String, "byte_offset": pl.Int64, "entry": pl.String, "reason": pl.String}


@dataclass(frozen=True)
class ServedRows:
    decisions: pl.DataFrame  # DECISION_SCHEMA, `day` = the day served
    transactions: pl.DataFrame  # TRANSACTION_COLUMNS as strings (as a source delivers them) + `day`
    quarantined: pl.DataFrame  # QUARANTINE_SCHEMA


def _text(value: object, field: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{field}: expected a non-empty string, got {type(value).__name__}")
    return value


def _finite(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field}: expected a number, got {type(value).__name__}")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{field}: not a finite number")
    return number


def _time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected an ISO-8601 string, got {type(value).__name__}")
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _rows(entry: dict) -> tuple[dict, dict]:
    # The service's own clock, checked against the consumer's: a corrupt entry must not
    # create a decision partition in year 9999 either.
    try:
        served_at = check_event_time(_time(entry.get("served_at"), "served_at"))
    except ValueError as error:
        raise ValueError(f"served_at: {error}".replace("event_time ", "")) from error
    t = entry.get("transaction")
    if not isinstance(t, dict):
        raise ValueError("transaction: missing or not an object")
    # The same window the service applies, at the time it served: a log replayed later
    # is judged as it was when it was written.
    at = check_event_time(_time(t.get("event_time"), "transaction.event_time"), now=served_at)
    shadow = entry.get("shadow") or {}
    if not isinstance(shadow, dict):
        raise ValueError("shadow: not an object")
    versions = entry.get("feature_versions")
    if not isinstance(versions, dict):
        raise ValueError("feature_versions: missing or not an object")
    features = entry.get("features")
    complete = entry.get("features_complete")
    decision = {
        "request_id": _text(entry.get("request_id"), "request_id"),
        "served_at": served_at,
        "transaction_id": _text(entry.get("transaction_id"), "transaction_id"),
        "customer_id": _text(t.get("customer_id"), "transaction.customer_id"),
        "strategy": _text(entry.get("strategy"), "strategy"),
        "experiment_id": _text(entry.get("experiment_id"), "experiment_id"),
        "challenger_share": _finite(entry.get("challenger_share"), "challenger_share"),
        "variant": _text(entry.get("variant"), "variant"),
        "model_version": int(_finite(entry.get("model_version"), "model_version")),
        "score": _finite(entry.get("score"), "score"),
        "shadow_model_version": None
        if shadow.get("model_version") is None
        else int(_finite(shadow["model_version"], "shadow.model_version")),
        "shadow_score": None if shadow.get("score") is None else _finite(shadow["score"], "shadow.score"),
        "fallback": _text(entry.get("fallback"), "fallback", required=False),
        "latency_ms": _finite(entry.get("latency_ms"), "latency_ms"),
        "feature_versions": json.dumps(versions, sort_keys=True),
        "features": json.dumps(features) if features is not None else None,
        "features_complete": complete if isinstance(complete, bool) else None,
        "day": served_at.date().isoformat(),
    }
    transaction = {
        "transaction_id": _text(t.get("transaction_id"), "transaction.transaction_id"),
        "customer_id": decision["customer_id"],
        "merchant_id": _text(t.get("merchant_id"), "transaction.merchant_id"),
        "merchant_category": _text(
            t.get("merchant_category"), "transaction.merchant_category", required=False
        ),
        "amount": repr(_finite(t.get("amount"), "transaction.amount")),
        "currency": _text(t.get("currency"), "transaction.currency"),
        "event_time": at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z",
        "channel": _text(t.get("channel"), "transaction.channel"),
        "device_id": _text(t.get("device_id"), "transaction.device_id", required=False),
        "country": _text(t.get("country"), "transaction.country"),
        "email": None,
        "card_fingerprint": None,
        "day": at.date().isoformat(),
    }
    if decision["transaction_id"] != transaction["transaction_id"]:
        raise ValueError("transaction_id of the decision and of its transaction differ")
    return decision, transaction


def served_rows(batch: StreamBatch) -> ServedRows:
    """The batch's entries as decision and transaction rows; every other line, quarantined."""
    decisions, transactions = [], []
    quarantined = [
        {"segment": b.segment, "byte_offset": b.byte_offset, "entry": b.text, "reason": b.reason}
        for b in batch.bad
    ]
    for entry, (segment, offset) in zip(batch.entries, batch.positions, strict=True):
        try:
            decision, transaction = _rows(entry)
        except (ValueError, TypeError, OverflowError, KeyError) as error:
            try:
                text = orjson.dumps(entry, default=str).decode()[:4096]
            except TypeError:  # e.g. an integer beyond 64 bits
                text = json.dumps(entry, default=str)[:4096]
            quarantined.append(
                {"segment": segment, "byte_offset": offset, "entry": text, "reason": str(error)}
            )
            continue
        decisions.append(decision)
        transactions.append(transaction)
    return ServedRows(
        pl.DataFrame(decisions, schema=DECISION_SCHEMA),
        pl.DataFrame(transactions, schema={c: pl.String for c in (*TRANSACTION_COLUMNS, "day")}),
        pl.DataFrame(quarantined, schema=QUARANTINE_SCHEMA),
    )


def read_served_transactions(raw_transactions, days: list[date]) -> pl.DataFrame | None:
    """The accepted served transactions of `days` from the region's raw_transactions Delta
    table (`meridian.lake_tables.LakeTable`, origin `served`), or None when none of those
    days has any.

    A day whose file cannot be read (a storage fault truncated it) is passed over with a
    warning: its transactions are out of the lake for every reader until the dbt asset drops
    the partition with an ERROR alert, so no chargeback can label them either."""
    try:  # one read of every day; only when a file is unreadable, day by day to pass over it
        frames = [raw_transactions.read(where={"day": [d.isoformat() for d in days], "origin": "served"})]
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        frames = []
        for day in days:
            try:
                frames.append(raw_transactions.read(where={"day": day.isoformat(), "origin": "served"}))
            except (OSError, ValueError) as error:
                log.warning(
                    "served transactions of %s are unreadable (%s): no chargebacks for them", day, error
                )
    frames = [f.drop("origin") for f in frames if f is not None and f.height]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None
