"""The push path: folded rows against a brute-force reference, and event-time ordering in the store."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meridian.online_store import OnlineRow
from meridian.push import MICROS, WINDOWS, PushQueue, fold
from tests.conftest import open_test_store

HOUR_US = 3600 * MICROS

transactions = st.lists(
    st.tuples(st.integers(1, 40 * 24 * HOUR_US), st.floats(0.01, 5000, allow_nan=False)),
    min_size=1,
    max_size=30,
    unique_by=lambda t: t[0],
).map(sorted)


@settings(max_examples=300, deadline=None)
@given(transactions)
def test_folded_rows_bound_the_exact_windows_and_are_exact_where_documented(txns):
    row = None
    for k, (t, amount) in enumerate(txns):
        row = fold(row, "customer_spend", "v1", "c-1", t, amount, f"m-{k % 3}", None)
        for suffix, window in WINDOWS.items():
            w = int(window.total_seconds() * MICROS)
            inside = [a for (s, a) in txns[: k + 1] if t - s <= w]  # the SQL's inclusive range frame
            count, total = row.values[f"txn_count_{suffix}"], row.values[f"amount_usd_{suffix}"]
            assert count >= len(inside) and total >= sum(inside) - 1e-3
            gaps_within = k > 0 and t - txns[k - 1][0] <= w
            if not gaps_within:  # the window passed since the previous transaction: exact
                assert count == 1 and total == pytest.approx(amount, abs=1e-4)
            if t - txns[0][0] <= w:  # every transaction so far is in the window: exact
                assert count == k + 1 and total == pytest.approx(sum(a for _, a in txns[: k + 1]), abs=1e-3)
        previous = txns[k - 1][0] if k else None
        expected_gap = (
            (t - previous) / MICROS if previous is not None and t - previous <= 30 * 24 * HOUR_US else None
        )
        assert row.values["seconds_since_previous_txn"] == expected_gap
        assert row.event_time_us == t


def test_an_out_of_order_transaction_does_not_fold_onto_a_newer_row():
    newer = OnlineRow("customer_spend", "c-1", 10 * HOUR_US, "v1", {"txn_count_1h": 5})
    row = fold(newer, "customer_spend", "v1", "c-1", 9 * HOUR_US, 10.0, "m", None)
    assert row.values["txn_count_1h"] == 1 and row.event_time_us == 9 * HOUR_US


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path: Path):
    s = open_test_store(request, tmp_path)
    yield s
    s.close()


def test_pushes_and_batch_writes_in_any_order_end_at_the_latest_event(store):
    """A batch writer and the push queue race on the same 200 customers; each customer ends
    at its newest event time whoever wrote last, and pending pushes are readable at once."""
    rng = random.Random(7)
    customers = [f"c-{i}" for i in range(200)]
    events = {c: rng.sample(range(1, 10_000), 20) for c in customers}
    newest = {c: max(times) for c, times in events.items()}
    push = PushQueue(store, flush_seconds=0.005)
    pushed, batched = [], []
    for c, times in events.items():
        for t in times:
            (pushed if rng.random() < 0.5 else batched).append(
                OnlineRow("customer_spend", c, t, "v1", {"t": t})
            )
    rng.shuffle(pushed)
    rng.shuffle(batched)

    def batch_writer():
        for i in range(0, len(batched), 97):
            store.write(batched[i : i + 97])

    writer = threading.Thread(target=batch_writer)
    writer.start()
    for row in pushed:
        push.push(row)
        held = push.latest(row.view, row.entity)
        assert held is not None and held.event_time_us >= row.event_time_us  # read-your-writes
    writer.join()
    push.close()
    final = store.read_many("customer_spend", customers)
    assert {c: r.event_time_us for c, r in final.items()} == newest
    assert all(r.values["t"] == r.event_time_us for r in final.values())
    assert push.failures == 0 and not push._pending


def test_a_store_that_is_down_is_reported_once_not_every_flush_and_its_return_too(caplog):
    """Before: every failed flush (every 50 ms) logged a warning: 84 lines in a 4 s outage."""

    class DownThenUp:
        def __init__(self):
            self.down, self.written = True, []

        def write(self, rows):
            if self.down:
                raise OSError("online store is missing")
            self.written.extend(rows)
            return type("Result", (), {"applied": len(self.written), "stale": 0})()

    store = DownThenUp()
    queue = PushQueue(store, flush_seconds=3600)  # flushed by hand below
    queue.push(OnlineRow("customer_spend", "c1", 1, "v", {}))
    with caplog.at_level("WARNING", logger="meridian.push"):
        for _ in range(40):
            queue.flush()
        assert queue.failures == 40 and queue.pending == 1  # kept for the next attempt
        store.down = False
        queue.flush()
        queue.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "1 attempt(s) so far" in messages[0] and "online store is missing" in messages[0]
    assert messages[1] == "online push writes again after 40 failed attempt(s)"
    assert queue.pending == 0 and len(store.written) == 1
