"""The push path: fresh customer features from the transaction being scored.

Offline, a transaction's `customer_spend` row describes the customer at the moment of
that transaction, the transaction itself included (dbt model customer_spend_features).
Online, the store holds the row of the customer's previous transaction. `fold` applies
the new transaction to that row, so the model sees what the offline row for this
transaction will say, and the folded row is pushed to the online store at the
transaction's event time: the customer's next request sees it without waiting for the
next batch.

What is exact and what is not, field by field (base row at t0, new transaction at t):
- `seconds_since_previous_txn` = t − t0: exact when the base row is the customer's
  latest transaction.
- counts and sums over a window W: exact when t − t0 > W (only the new transaction is
  in the window); otherwise base + this transaction, an upper bound, because the online
  row cannot know which of its earlier transactions left the window since t0.
- `amount_to_30d_mean_ratio`: from the folded 30-day figures.
- distinct merchants/devices and `is_new_device_30d`: reset when the window has passed;
  otherwise the merchant or device is counted as new only if it differs from the base
  row's last one (older ones are not in the row; after a batch row, which does not
  carry them, the first push counts them as new).
The batch materialization rewrites the row from the lake, where the stream log has put
the served transaction, and the store keeps whichever row is newest in event time: a
push never undoes a newer batch row and a batch row never undoes a newer push.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from meridian.online_store import OnlineRow, OnlineStore

log = logging.getLogger("meridian.push")

WINDOWS = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
MICROS = 1_000_000


def fold(
    base: OnlineRow | None,
    view: str,
    version: str,
    customer_id: str,
    event_time_us: int,
    amount_usd: float,
    merchant_id: str,
    device_id: str | None,
) -> OnlineRow:
    """The customer_spend row for a new transaction, from the customer's previous row."""
    if base is not None and base.event_time_us > event_time_us:
        base = None  # an out-of-order transaction: the store's row is from its future; no fold
    old = base.values if base else {}
    gap_us = event_time_us - base.event_time_us if base else None

    def within(window: timedelta) -> bool:
        return gap_us is not None and gap_us <= window.total_seconds() * MICROS

    values: dict[str, object] = {}
    for suffix, window in WINDOWS.items():
        keep = within(window)
        values[f"txn_count_{suffix}"] = (int(old.get(f"txn_count_{suffix}") or 0) if keep else 0) + 1
        prior = float(old.get(f"amount_usd_{suffix}") or 0.0) if keep else 0.0
        values[f"amount_usd_{suffix}"] = round(prior + amount_usd, 4)
    mean_30d = values["amount_usd_30d"] / values["txn_count_30d"]
    values["amount_to_30d_mean_ratio"] = round(amount_usd / mean_30d, 4) if mean_30d else None
    same_merchant = old.get("_last_merchant") == merchant_id
    for suffix in ("24h", "30d"):
        key = f"distinct_merchants_{suffix}"
        values[key] = (int(old.get(key) or 1) + (0 if same_merchant else 1)) if within(WINDOWS[suffix]) else 1
    device = device_id or old.get("_last_device")
    new_device = device is not None and device != old.get("_last_device")
    if within(WINDOWS["30d"]):
        values["distinct_devices_30d"] = int(old.get("distinct_devices_30d") or 1) + int(new_device)
        values["is_new_device_30d"] = new_device
    else:
        values["distinct_devices_30d"] = 1
        values["is_new_device_30d"] = True
    values["seconds_since_previous_txn"] = (
        gap_us / MICROS if gap_us is not None and within(WINDOWS["30d"]) else None
    )
    # Bookkeeping for the next fold; not features (serve() returns declared features only).
    values["_last_merchant"] = merchant_id
    values["_last_device"] = device
    return OnlineRow(view, customer_id, event_time_us, version, values)


class PushQueue:
    """Pushed rows, written to the online store in the background in batches.

    A request folds and enqueues its row and returns; the writer thread writes what is
    pending every `flush_seconds` in one store transaction (SQLite) or pipeline (Redis),
    so a burst of requests costs one write, not one each. Until a row is written,
    `latest` returns it from memory: the next request of the same customer in this
    process folds onto it (read-your-writes). A row that fails to write (store down) is
    kept and retried; pushes are an optimisation on top of the batch path, so the batch
    materialization still brings the store up to date if the process dies first.
    """

    # While the store is down a flush fails every flush_seconds: say so once, then at most
    # this often (with the count), and once more when it writes again.
    WARN_EVERY_S = 30.0

    def __init__(self, store: OnlineStore, flush_seconds: float = 0.05):
        self.store = store
        self.flush_seconds = flush_seconds
        self.pushed = 0
        self.stale = 0
        self.failures = 0
        self._failing_since: int | None = None  # self.failures when the current streak began
        self._warned_at = float("-inf")
        self._pending: dict[tuple[str, str], OnlineRow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="online-push", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows pushed and not yet written."""
        return len(self._pending)

    def latest(self, view: str, entity: str) -> OnlineRow | None:
        with self._lock:
            return self._pending.get((view, entity))

    def push(self, row: OnlineRow) -> None:
        with self._lock:
            held = self._pending.get((row.view, row.entity))
            if held is None or row.event_time_us >= held.event_time_us:
                self._pending[(row.view, row.entity)] = row

    def flush(self) -> None:
        with self._lock:
            batch = dict(self._pending)
        if not batch:
            return
        try:
            result = self.store.write(batch.values())
        except Exception as error:  # keep them; the next flush retries
            self.failures += 1
            if self._failing_since is None:
                self._failing_since = self.failures - 1
            now = time.monotonic()
            if now - self._warned_at >= self.WARN_EVERY_S:
                self._warned_at = now
                log.warning(
                    "online push of %d rows failed (%d attempt(s) so far; retrying every %.2f s): %s",
                    len(batch),
                    self.failures - self._failing_since,
                    self.flush_seconds,
                    error,
                )
            return
        if self._failing_since is not None:
            log.warning(
                "online push writes again after %d failed attempt(s)", self.failures - self._failing_since
            )
            self._failing_since, self._warned_at = None, float("-inf")
        self.pushed += result.applied
        self.stale += result.stale
        with self._lock:
            for key, row in batch.items():
                if self._pending.get(key) is row:  # not replaced by a newer push meanwhile
                    del self._pending[key]

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()
