"""Online feature store: the latest values of every feature view per entity, per region.

Two backends behind one interface: SQLite (the embedded default, one file per region
under the region's root) and Redis (production; one key space per region). Each row
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

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson
import polars as pl

from meridian.conflicts import HybridLogicalClock, format_hlc
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
    def count(self, view: str) -> int: ...
    def iter_rows(self, view: str) -> Iterable[OnlineRow]: ...
    def ping(self) -> None: ...
    def probe(self) -> None: ...
    def drop_future(self, view: str, after_us: int) -> int: ...
    def close(self) -> None: ...


def _dumps(values: dict[str, object]) -> str:
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


# ---------------------------------------------------------------- SQLite


class SqliteOnlineStore:
    """One SQLite file per region; WAL so that readers never wait for the writer."""

    SCHEMA = """
        create table if not exists online_features (
            view text not null,
            entity text not null,
            event_time_us integer not null,
            version text not null,
            payload text not null,
            hlc integer not null default 0,
            origin text not null default '',
            primary key (view, entity)
        ) without rowid
    """
    UPSERT = """
        insert into online_features (view, entity, event_time_us, version, payload, hlc, origin)
        values (?, ?, ?, ?, ?, ?, ?)
        on conflict (view, entity) do update set
            event_time_us = excluded.event_time_us,
            version = excluded.version,
            payload = excluded.payload,
            hlc = excluded.hlc,
            origin = excluded.origin
        where (excluded.event_time_us, excluded.hlc, excluded.origin)
            > (online_features.event_time_us, online_features.hlc, online_features.origin)
    """

    def __init__(self, path: Path, timeout_seconds: float = 30.0, origin: str = "", create: bool = True):
        """`create=False` (readers such as the scoring service): a missing file is an error
        (OnlineStoreUnavailable), never a new empty store that answers "unknown" for everyone."""
        self.path = Path(path)
        self.origin = origin
        self._timeout = timeout_seconds
        self._local = threading.local()
        self._generation = 0  # bumped by `reopen`: every thread's connection is then renewed
        if not create and not self.path.is_file():
            raise OnlineStoreUnavailable(
                f"online store {self.path} does not exist: materialize online_features for the region"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._inode = None
        con = self._con()
        with self._errors("cannot be opened"):
            if create:
                con.execute("pragma journal_mode=wal")
                con.execute(self.SCHEMA)
                columns = {row[1] for row in con.execute("pragma table_info(online_features)")}
                for name, ddl in (
                    ("hlc", "integer not null default 0"),
                    ("origin", "text not null default ''"),
                ):
                    if name not in columns:  # a store written before stamps existed
                        con.execute(f"alter table online_features add column {name} {ddl}")
                con.commit()
            else:
                con.execute("select 1 from online_features limit 1").fetchall()
        self._inode = self.path.stat().st_ino

    @contextlib.contextmanager
    def _errors(self, doing: str):
        try:
            yield
        except sqlite3.Error as error:  # corrupt, replaced, locked for too long, schema gone
            raise OnlineStoreUnavailable(f"online store {self.path} {doing}: {error}") from error

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is not None and getattr(self._local, "generation", 0) != self._generation:
            con.close()
            con = None
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=self._timeout, isolation_level="DEFERRED")
                con.execute("pragma synchronous=normal")
            except sqlite3.Error as error:
                raise OnlineStoreUnavailable(f"online store {self.path} cannot be opened: {error}") from error
            self._local.con = con
            self._local.generation = self._generation
        return con

    def probe(self) -> None:
        """Raise OnlineStoreUnavailable unless the file is the one opened and answers a real lookup.

        A fresh read-only connection each time: a connection opened earlier keeps reading a
        file that was moved away, deleted or overwritten, and would say all is well.
        """
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            raise OnlineStoreUnavailable(f"online store {self.path} is missing") from None
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
            try:
                con.execute("select view, entity, payload from online_features limit 1").fetchall()
            finally:
                con.close()
        except sqlite3.Error as error:
            raise OnlineStoreUnavailable(f"online store {self.path} is unreadable: {error}") from error
        if inode != self._inode:
            raise StoreReplaced(f"online store {self.path} was replaced since it was opened")

    def reopen(self) -> None:
        """Follow the file now at `path` (after `probe` said it was replaced and is readable)."""
        self._inode = self.path.stat().st_ino
        self._generation += 1

    def write(self, rows: Iterable[OnlineRow]) -> WriteResult:
        con = self._con()
        total = 0
        before = con.total_changes
        with self._errors("cannot be written"), con:  # one transaction: a batch lands whole or not at all
            for chunk in _chunks(rows, 10_000):
                total += len(chunk)
                now = CLOCK.now()
                con.executemany(
                    self.UPSERT,
                    [
                        (
                            r.view,
                            r.entity,
                            r.event_time_us,
                            r.version,
                            _dumps(r.values),
                            r.hlc or now,
                            r.origin or self.origin,
                        )
                        for r in chunk
                    ],
                )
        applied = con.total_changes - before
        return WriteResult(applied=applied, stale=total - applied)

    def write_frame(self, view: str, version: str, frame: pl.DataFrame) -> WriteResult:
        """Bulk write of an encoded frame (`encode_frame`), one transaction, same rule as `write`."""
        con = self._con()
        before = con.total_changes
        with self._errors("cannot be written"), con:
            for chunk in frame.iter_slices(50_000):
                now = CLOCK.now()
                con.executemany(
                    self.UPSERT,
                    [
                        (view, e, t, version, p, now, self.origin)
                        for e, t, p in chunk.select("entity", "event_time_us", "payload").iter_rows()
                    ],
                )
        applied = con.total_changes - before
        return WriteResult(applied=applied, stale=frame.height - applied)

    def read(self, view: str, entity: str) -> OnlineRow | None:
        with self._errors("cannot be read"):
            found = (
                self._con()
                .execute(
                    "select event_time_us, version, payload, hlc, origin from online_features "
                    "where view = ? and entity = ?",
                    (view, entity),
                )
                .fetchone()
            )
        if found is None:
            return None
        return OnlineRow(view, entity, found[0], found[1], orjson.loads(found[2]), found[3], found[4])

    def read_many(self, view: str, entities: Sequence[str]) -> dict[str, OnlineRow]:
        out: dict[str, OnlineRow] = {}
        con = self._con()
        with self._errors("cannot be read"):
            for chunk in _chunks(entities, 500):
                marks = ",".join("?" * len(chunk))
                for entity, t, version, payload in con.execute(
                    f"select entity, event_time_us, version, payload from online_features "
                    f"where view = ? and entity in ({marks})",
                    (view, *chunk),
                ):
                    out[entity] = OnlineRow(view, entity, t, version, orjson.loads(payload))
        return out

    def count(self, view: str) -> int:
        return (
            self._con().execute("select count(*) from online_features where view = ?", (view,)).fetchone()[0]
        )

    def iter_rows(self, view: str) -> Iterable[OnlineRow]:
        cur = self._con().execute(
            "select entity, event_time_us, version, payload, hlc, origin from online_features where view = ?",
            (view,),
        )
        for entity, t, version, payload, hlc, origin in cur:
            yield OnlineRow(view, entity, t, version, orjson.loads(payload), hlc, origin)

    def ping(self) -> None:
        with self._errors("does not answer"):
            self._con().execute("select 1 from online_features limit 1").fetchone()

    def drop_future(self, view: str, after_us: int) -> int:
        """Delete the view's rows stamped after `after_us`: no write could ever replace them.

        A row from the future (a clock gone wrong, an event time nobody should have
        accepted) would win every later comparison of the monotone upsert; the batch path
        removes it before it writes, so the offline value takes its place.
        """
        con = self._con()
        with self._errors("cannot be repaired"), con:
            return con.execute(
                "delete from online_features where view = ? and event_time_us > ?", (view, after_us)
            ).rowcount

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


# ---------------------------------------------------------------- Redis

# KEYS[1] = entity key, KEYS[2] = view index; ARGV = event_time_us, version, payload,
# hlc (zero-padded: Lua numbers are doubles), origin. Applies only if (t, h, o) is greater.
_CAS = """
local cur = redis.call('HMGET', KEYS[1], 't', 'h', 'o')
if cur[1] then
  local t, ct = tonumber(ARGV[1]), tonumber(cur[1])
  if t < ct then return 0 end
  if t == ct then
    local ch, co = cur[2] or '', cur[3] or ''
    if ARGV[4] < ch or (ARGV[4] == ch and ARGV[5] <= co) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'v', ARGV[2], 'p', ARGV[3], 'h', ARGV[4], 'o', ARGV[5])
redis.call('SADD', KEYS[2], KEYS[1])
return 1
"""


class RedisOnlineStore:
    """One hash per (region, view, entity): `meridian:<region>:<view>:<entity>` → t, v, p.

    A set per view indexes its keys (`count`); in production each region has its own
    Redis, and the key prefix keeps regions apart even on a shared test server.
    """

    def __init__(self, url: str, region: str, timeout_seconds: float = 2.0, origin: str = ""):
        import redis

        self.region = region
        self.origin = origin or region
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._url = url
        self._cas = self._client.register_script(_CAS)

    def _key(self, view: str, entity: str) -> str:
        return f"meridian:{self.region}:{view}:{entity}"

    def _index(self, view: str) -> str:
        return f"meridian:{self.region}:{view}:__keys__"

    def _guard(self, fn):
        import redis

        try:
            return fn()
        except redis.exceptions.ConnectionError as error:
            raise OnlineStoreUnavailable(f"online store {self._url} is unreachable: {error}") from error
        except redis.exceptions.TimeoutError as error:
            raise OnlineStoreUnavailable(f"online store {self._url} timed out: {error}") from error
        except redis.exceptions.RedisError as error:  # e.g. a key of the wrong type: not a 500
            raise OnlineStoreUnavailable(f"online store {self._url} failed: {error}") from error

    def write(self, rows: Iterable[OnlineRow]) -> WriteResult:
        applied = total = 0
        for chunk in _chunks(rows, 5_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                now = CLOCK.now()
                for r in chunk:
                    self._cas(
                        keys=[self._key(r.view, r.entity), self._index(r.view)],
                        args=[
                            r.event_time_us,
                            r.version,
                            _dumps(r.values),
                            format_hlc(r.hlc or now),
                            r.origin or self.origin,
                        ],
                        client=pipe,
                    )
                return pipe.execute()

            results = self._guard(run)
            applied += sum(int(x) for x in results)
            total += len(chunk)
        return WriteResult(applied=applied, stale=total - applied)

    def write_frame(self, view: str, version: str, frame: pl.DataFrame) -> WriteResult:
        """Bulk write of an encoded frame: pipelines of the same compare-and-set script."""
        applied = 0
        index = self._index(view)
        prefix = f"meridian:{self.region}:{view}:"
        for chunk in frame.iter_slices(5_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                stamp = format_hlc(CLOCK.now())
                for e, t, p in chunk.select("entity", "event_time_us", "payload").iter_rows():
                    self._cas(keys=[prefix + e, index], args=[t, version, p, stamp, self.origin], client=pipe)
                return pipe.execute()

            applied += sum(int(x) for x in self._guard(run))
        return WriteResult(applied=applied, stale=frame.height - applied)

    def read(self, view: str, entity: str) -> OnlineRow | None:
        found = self._guard(lambda: self._client.hmget(self._key(view, entity), "t", "v", "p", "h", "o"))
        if found[0] is None:
            return None
        t, v, p, h, o = found
        return OnlineRow(
            view, entity, int(t), v.decode(), orjson.loads(p), int(h) if h else 0, o.decode() if o else ""
        )

    def read_many(self, view: str, entities: Sequence[str]) -> dict[str, OnlineRow]:
        def run():
            pipe = self._client.pipeline(transaction=False)
            for entity in entities:
                pipe.hmget(self._key(view, entity), "t", "v", "p")
            return pipe.execute()

        out = {}
        for entity, (t, v, p) in zip(entities, self._guard(run), strict=True):
            if t is not None:
                out[entity] = OnlineRow(view, entity, int(t), v.decode(), orjson.loads(p))
        return out

    def count(self, view: str) -> int:
        return int(self._guard(lambda: self._client.scard(self._index(view))))

    def iter_rows(self, view: str) -> Iterable[OnlineRow]:
        prefix = len(f"meridian:{self.region}:{view}:")
        keys = sorted(self._guard(lambda: self._client.smembers(self._index(view))))
        for chunk in _chunks(keys, 1_000):

            def run(chunk=chunk):
                pipe = self._client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, "t", "v", "p", "h", "o")
                return pipe.execute()

            for key, (t, v, p, h, o) in zip(chunk, self._guard(run), strict=True):
                if t is not None:
                    yield OnlineRow(
                        view,
                        key.decode()[prefix:],
                        int(t),
                        v.decode(),
                        orjson.loads(p),
                        int(h) if h else 0,
                        o.decode() if o else "",
                    )

    def ping(self) -> None:
        self._guard(self._client.ping)

    def probe(self) -> None:
        """A real lookup, not only PING: the key space answers reads."""
        self._guard(lambda: self._client.srandmember(self._index("customer_spend")))

    def drop_future(self, view: str, after_us: int) -> int:
        """Delete the view's rows stamped after `after_us` (see SqliteOnlineStore.drop_future)."""
        dropped = 0
        for row in list(self.iter_rows(view)):
            if row.event_time_us > after_us:
                key = self._key(view, row.entity)

                def run(key=key):
                    pipe = self._client.pipeline(transaction=True)
                    pipe.delete(key)
                    pipe.srem(self._index(view), key)
                    return pipe.execute()

                self._guard(run)
                dropped += 1
        return dropped

    def close(self) -> None:
        self._client.close()


def _chunks(items: Iterable, size: int) -> Iterable[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
