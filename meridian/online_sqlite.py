"""The online store on SQLite: the embedded default, one file per region (WAL, one writer)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson
import polars as pl

from meridian.online_store import (
    CLOCK,
    OnlineRow,
    OnlineStoreUnavailable,
    StoreReplaced,
    WriteResult,
    chunks,
    dump_values,
)


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
    # Last writer by (event time, HLC, origin) wins: an older row never replaces a newer one.
    _ON_CONFLICT = """
        on conflict (view, entity) do update set
            event_time_us = excluded.event_time_us,
            version = excluded.version,
            payload = excluded.payload,
            hlc = excluded.hlc,
            origin = excluded.origin
        where (excluded.event_time_us, excluded.hlc, excluded.origin)
            > (online_features.event_time_us, online_features.hlc, online_features.origin)
    """
    _COLUMNS = "insert into online_features (view, entity, event_time_us, version, payload, hlc, origin)"
    UPSERT = f"{_COLUMNS} values (?, ?, ?, ?, ?, ?, ?) {_ON_CONFLICT}"
    # The same upsert over a batch passed as one JSON array of rows (in order, as executemany
    # would apply them): SQLite walks it in C with the GIL released once per batch. With
    # executemany every row is bound by Python code that needs the GIL, so the scoring
    # service's push thread took it back once per row from the request loop: measured under
    # closed-loop load (benchmarks/serving.py), 3,250 requests/s with pushes on against
    # 3,990 with them off, before this. `where true` resolves SQLite's upsert-after-select
    # parsing ambiguity.
    UPSERT_JSON = (
        f"{_COLUMNS} select value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
        f"value ->> 6 from json_each(?) where true {_ON_CONFLICT}"
    )

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
        try:
            # The store's own folder only: a region root that is gone stays gone (only
            # provisioning creates one, meridian.dr.provisioning) instead of coming back empty
            # under a run that was in flight when the storage was lost.
            self.path.parent.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise OnlineStoreUnavailable(
                f"online store {self.path} cannot be created: {self.path.parent.parent} is missing"
            ) from None
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
                first = con.execute("select view, entity, payload from online_features limit 1").fetchone()
                if first is not None:  # a keyed read through the primary key's index, as serving reads
                    con.execute(
                        "select payload from online_features where view = ? and entity = ?", first[:2]
                    ).fetchone()
                    orjson.loads(first[2])
            finally:
                con.close()
        except (sqlite3.Error, orjson.JSONDecodeError) as error:
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
            for chunk in chunks(rows, 10_000):
                total += len(chunk)
                now = CLOCK.now()
                batch = [
                    (
                        r.view,
                        r.entity,
                        r.event_time_us,
                        r.version,
                        dump_values(r.values),
                        r.hlc or now,
                        r.origin or self.origin,
                    )
                    for r in chunk
                ]
                con.execute(self.UPSERT_JSON, (orjson.dumps(batch).decode(),))
        applied = con.total_changes - before
        return WriteResult(applied=applied, stale=total - applied)

    def write_frame(self, view: str, version: str, frame: pl.DataFrame) -> WriteResult:
        """Bulk write of an encoded frame (`encode_frame`), one transaction, same rule as `write`.

        The rows go in the table's key order (entity within the view): the upserts then walk
        the primary key's B-tree once, page after page, instead of at random, and the cost per
        row stays flat as the store grows (`benchmarks/online_materialization.py --growth`:
        in arrival order it rose from 6.6 to 10.5 us between 50k and 500k entities; in key
        order 4.2 and 4.0 us). The sort is stable: rows of one entity keep their order.
        """
        con = self._con()
        before = con.total_changes
        frame = frame.sort("entity", maintain_order=True)
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
        return None if found is None else self._row(view, entity, *found)

    def _row(
        self, view: str, entity: str, t: int, version: str, payload: str, hlc: int, origin: str
    ) -> OnlineRow:
        try:
            values = orjson.loads(payload)
        except orjson.JSONDecodeError as error:  # a corrupt row: the store, not the request
            raise OnlineStoreUnavailable(
                f"online store {self.path} holds a corrupt row {view}/{entity}: {error}"
            ) from error
        return OnlineRow(view, entity, t, version, values, hlc, origin)

    def read_keys(self, keys: Sequence[tuple[str, str]]) -> list[OnlineRow | None]:
        """Each (view, entity)'s row or None, in the order asked: one statement (each term a
        primary-key lookup), so a scoring request reads its customer and merchant at once."""
        if not keys:
            return []
        where = " or ".join(["(view = ? and entity = ?)"] * len(keys))
        with self._errors("cannot be read"):
            found = (
                self._con()
                .execute(
                    f"select view, entity, event_time_us, version, payload, hlc, origin from online_features "
                    f"where {where}",
                    [part for key in keys for part in key],
                )
                .fetchall()
            )
        rows = {(view, entity): self._row(view, entity, *rest) for view, entity, *rest in found}
        return [rows.get(key) for key in keys]

    def read_many(self, view: str, entities: Sequence[str]) -> dict[str, OnlineRow]:
        out: dict[str, OnlineRow] = {}
        con = self._con()
        with self._errors("cannot be read"):
            for chunk in chunks(entities, 500):
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
