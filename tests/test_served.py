"""Stream-log entries as lake rows: a valid entry becomes a decision and its transaction; any
other entry is quarantined whole with its position and reason (no Dagster needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meridian.served import served_rows
from meridian.stream_log import BadLine, StreamBatch

NOW = datetime.now(UTC).replace(microsecond=0)


def _entry(**changes) -> dict:
    entry = {
        "request_id": "r-1",
        "served_at": NOW.isoformat(),
        "transaction_id": "t-1",
        "transaction": {
            "transaction_id": "t-1",
            "customer_id": "euwest-c1",
            "merchant_id": "euwest-m1",
            "amount": 12.5,
            "currency": "EUR",
            "channel": "pos",
            "country": "IE",
            "event_time": (NOW - timedelta(minutes=1)).isoformat(),
        },
        "strategy": "champion",
        "experiment_id": "x",
        "challenger_share": 0.0,
        "variant": "champion",
        "model_version": 3,
        "score": 0.25,
        "latency_ms": 1.5,
        "feature_versions": {"customer_spend": "abc"},
        "features": {"a": 1.0},
        "features_complete": True,
    }
    for key, value in changes.items():
        if key.startswith("t_"):
            entry["transaction"] = {**entry["transaction"], key[2:]: value}
        else:
            entry[key] = value
    return entry


def _batch(*entries: dict, bad: list[BadLine] | None = None) -> StreamBatch:
    return StreamBatch(list(entries), [("seg", 100 * i) for i in range(len(entries))], {"seg": 1}, bad or [])


def test_a_valid_entry_becomes_a_decision_and_its_transaction():
    rows = served_rows(_batch(_entry()))
    assert rows.quarantined.is_empty()
    assert rows.decisions.height == 1 and rows.decisions["model_version"].to_list() == [3]
    transaction = rows.transactions.row(0, named=True)
    assert transaction["amount"] == "12.5" and transaction["event_time"].endswith("Z")
    assert transaction["day"] == (NOW - timedelta(minutes=1)).date().isoformat()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"t_event_time": "9999-12-31T23:59:59+00:00"}, "ahead of the receiving clock"),
        ({"t_event_time": "0001-01-01T00:00:00+00:00"}, "oldest event"),
        ({"t_event_time": 1767225600}, "expected an ISO-8601 string"),
        ({"t_event_time": "yesterday"}, "Invalid isoformat"),
        ({"served_at": "9999-12-31T00:00:00+00:00"}, "served_at"),
        ({"transaction": None}, "transaction: missing"),
        ({"t_amount": "12.5"}, "transaction.amount: expected a number"),
        ({"t_amount": 10**400}, "int too large"),
        ({"score": None}, "score: expected a number"),
        ({"model_version": True}, "model_version: expected a number"),
        ({"feature_versions": []}, "feature_versions"),
        ({"t_customer_id": ""}, "transaction.customer_id"),
        ({"t_transaction_id": "t-2"}, "differ"),
        ({"shadow": "yes"}, "shadow: not an object"),
    ],
)
def test_an_entry_that_cannot_be_read_is_quarantined_whole_with_its_reason(changes, reason):
    rows = served_rows(_batch(_entry(), _entry(request_id="r-2", **changes)))
    assert rows.decisions.height == rows.transactions.height == 1  # the good one
    [quarantined] = rows.quarantined.to_dicts()
    assert quarantined["segment"] == "seg" and quarantined["byte_offset"] == 100
    assert reason in quarantined["reason"], quarantined["reason"]


def test_lines_that_are_no_entry_are_quarantined_too():
    rows = served_rows(_batch(bad=[BadLine("seg", 7, "{not json", "not JSON: ...")]))
    assert rows.quarantined.to_dicts() == [
        {"segment": "seg", "byte_offset": 7, "entry": "{not json", "reason": "not JSON: ..."}
    ]
