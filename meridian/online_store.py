"""Online feature store: the latest values of every feature view per entity, per region.

Two backends behind this interface: SQLite (meridian.online_sqlite, the embedded default, one file per region
under the region's root) and Redis (meridian.online_redis, production; one key space per region). Each row
carries its view, entity, feature-view version, event time and values.

Writes never move a value back in time: a row replaces the stored one only if its event
time is at least the stored event time. The batch materialization (from the offline
store) and the push path (fresh values while transactions are scored) can therefore
arrive in any order, re-run, or overlap, and every entity ends at its latest event —
in SQLite with a conditional upsert, in Redis with a compare-and-set Lua script, both
atomic per row.

Every write is stamped with the writer's hybrid logical clock and region (meridian.
conflicts), and the rule is last-writer-wins on (event time, HLC, region): on equal
event times the later write wins (a re-run is idempotent), and when both sides of a
failover wrote the same entity, merging their rows (`iter_rows` + `write`, stamps kept)
converges to the same row on both, whichever order the merge runs in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import orjson
import polars as pl

from meridian.conflicts import HybridLogicalClock
from meridian.feature_store import FeatureView

CLOCK = HybridLogicalClock()  # one per process: every store it opens stamps from it


class OnlineStoreUnavailable(RuntimeError):
    """The backend cannot be reached; callers answer 503 or fall back, never guess."""


class StoreReplaced(OnlineStoreUnavailable):
    """The store's file is another file than the one opened (restored, or swapped in)."""


@dataclass(frozen=True)
class OnlineRow:
    view: str
    entity: str
    event_time_us: int  # microseconds since the epoch, UTC
    version: str  # feature-view version that computed the values
    values: dict[str, object]
    # The write's stamp (not the row's content): 0 / "" means "stamp it when written".
    hlc: int = field(default=0, compare=False)
    origin: str = field(default="", compare=False)


@dataclass(frozen=True)
class WriteResult:
    applied: int  # rows that became the entity's current value
    stale: int  # rows older than what the store already held (kept out, by design)


class OnlineStore(Protocol):
    def write(self, rows: Iterable[OnlineRow]) -> WriteResult: ...
    def write_frame(self, view: str, version: str, frame: pl.DataFrame) -> WriteResult: ...
    def read(self, view: str, entity: str) -> OnlineRow | None: ...
    def read_many(self, view: str, entities: Sequence[str]) -> dict[str, OnlineRow]: ...
    # Rows of several views in one round trip (the scoring path: a customer and a merchant).
    def read_keys(self, keys: Sequence[tuple[str, str]]) -> list[OnlineRow | None]: ...
    def count(self, view: str) -> int: ...
    def iter_rows(self, view: str) -> Iterable[OnlineRow]: ...
    def ping(self) -> None: ...
    def probe(self) -> None: ...
    def drop_future(self, view: str, after_us: int) -> int: ...
    def close(self) -> None: ...


def dump_values(values: dict[str, object]) -> str:
    return orjson.dumps(values).decode()


def encode_frame(frame: pl.DataFrame, entity: str, event_time: str, features: Sequence[str]) -> pl.DataFrame:
    """A feature frame as the store's rows, vectorised: entity, event_time_us, payload (JSON).

    The payload is the same JSON object `write` stores for an OnlineRow's values (polars
    encodes it column-wise; no Python object per row).
    """
    return frame.select(
        pl.col(entity).cast(pl.String).alias("entity"),
        pl.col(event_time).cast(pl.Datetime("us")).dt.epoch("us").alias("event_time_us"),
        pl.struct([pl.col(f) for f in features]).struct.json_encode().alias("payload"),
    )


def to_micros(ts: datetime) -> int:
    """UTC microseconds of a naive-UTC or aware datetime."""
    if ts.tzinfo is not None:
        ts = ts.replace(tzinfo=None) - ts.utcoffset()
    return (ts - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def serve(view: FeatureView, row: OnlineRow | None, now_us: int) -> dict[str, object]:
    """The view's feature values for serving: stored values if live (within the TTL), else defaults.

    The same rule as point-in-time retrieval offline: a value older than the TTL, or an
    entity never seen, gets the feature's documented default.
    """
    ttl_us = int(view.ttl.total_seconds() * 1e6)
    if row is None or row.event_time_us > now_us or now_us - row.event_time_us > ttl_us:
        return {f.name: f.default for f in view.features}
    return {f.name: row.values.get(f.name, f.default) for f in view.features}


def chunks(items: Iterable, size: int) -> Iterable[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
