"""Dagster's SQLite event log, with its database engines kept between events.

Dagster's SqliteEventLogStorage builds a new SQLAlchemy engine for every connection: for
every event a run stores it creates an engine per database it writes (the run's shard,
and the index shard for asset and check events), opens a fresh SQLite connection, and
compiles every statement again (SQLAlchemy's compiled-statement cache lives on the
engine). On this 2-core machine that costs about 11 ms per materialization event, and a
ranged run stores thousands of events: it was most of the time of a 53-day run of one
region (28.8 s of 49 s in `store_event`).

This storage keeps one engine per shard (the most recently used 16), each with a small
pool of open connections. Everything else is Dagster's: the same files and schema, the
same journal mode (WAL) and durability (`synchronous` is left at SQLite's default FULL),
the same per-process lock around a connection. `benchmarks/event_log.py` measures the
two side by side. It changes only the embedded default; production stores events in
PostgreSQL, whose storage pools connections already.

It also stores Dagster's event batches in one transaction per shard. Dagster marks as one
batch the materializations (or observations) a step records for its range of partitions,
and the planned events a run records when it is created; it hands a batch to
`store_event_batch` only when `DAGSTER_EVENT_BATCH_SIZE` is set (Dagster's own switch,
read at every event), which this storage sets unless the environment already does.
Dagster's SQLite storage has no batch write (its base class stores the events one by
one); this one executes exactly the statements `store_event` would, in the same order,
but commits each shard once per batch instead of once per event.

The instance directory is written into `base_dir` when the instance configuration is
installed (`meridian.profiles.install_instance_config`), because a storage class is not
told which instance it belongs to.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import sqlalchemy as db
from dagster._core.errors import DagsterInvariantViolationError
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, BATCH_WRITABLE_EVENTS
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.sqlalchemy_compat import db_result
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from meridian.profiles import INSTANCE_DIR_PLACEHOLDER

KEPT_ENGINES = 16
# Events Dagster buffers before it hands them to store_event_batch: a 62-day run of a
# region plans ~900 events in one batch.
EVENT_BATCH_SIZE = 1000


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        if INSTANCE_DIR_PLACEHOLDER in base_dir:
            raise ValueError(
                f"event_log_storage base_dir {base_dir!r} still holds {INSTANCE_DIR_PLACEHOLDER}: "
                "install the instance configuration with `meridian.profiles.install_instance_config` "
                "(`meridian run` does), which writes the instance directory in"
            )
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        self._tables_present: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)
        # Dagster's switch for batched event writes (read at every event, so it holds from
        # here on, in this process and the run workers it starts).
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine; called under `_db_lock`."""
        if self._engines_pid != os.getpid():
            # A forked child must not share its parent's SQLite connections: forget them
            # (without closing them, which would be the parent's to do).
            self._engines = OrderedDict()
            self._engines_pid = os.getpid()
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = db.create_engine(
            self.conn_string_for_shard(shard),
            poolclass=QueuePool,
            pool_size=2,
            max_overflow=2,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        )
        self._engines[shard] = engine
        while len(self._engines) > KEPT_ENGINES:
            self._engines.popitem(last=False)[1].dispose()
        return engine

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As SqliteEventLogStorage._connect, with the shard's engine kept instead of created
        # and disposed around every connection.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        # Dagster opens a new engine for this on every asset event with indexed tags. A table
        # that exists stays (migrations add tables, a wipe empties them), so a yes is kept.
        if table_name in self._tables_present:
            return True
        present = super().has_table(table_name)
        if present:
            self._tables_present.add(table_name)
        return present

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """`store_event` for each event, with one commit per shard for the whole batch."""
        if not events:
            return
        if len({event.run_id for event in events}) > 1 or not all(
            event.is_dagster_event and event.dagster_event_type in BATCH_WRITABLE_EVENTS for event in events
        ):
            super().store_event_batch(events)  # one by one, as Dagster's storage does
            return
        statements = [self.prepare_insert_event(event) for event in events]
        with self.run_connection(events[0].run_id) as conn:
            for statement in statements:
                conn.execute(statement)
        # The index shard mirrors the asset and asset-check events, in the batch's order:
        # consecutive asset events share one transaction; a check event is stored as
        # store_event stores it (its own index connections).
        pending: list[tuple[EventLogEntry, object]] = []

        def mirror_pending() -> None:
            if not pending:
                return
            with self.index_transaction() as conn:
                for event, statement in pending:
                    with db_result(conn, statement) as result:
                        event_id = result.inserted_primary_key[0]
                    if event_id is None:
                        raise DagsterInvariantViolationError(
                            "Cannot store asset event tags for null event id."
                        )
                    self._store_asset_event_tags(conn, [event], [event_id])
                    self._store_asset_event(conn, event, event_id)
            pending.clear()

        for event, statement in zip(events, statements, strict=True):
            if event.dagster_event_type in ASSET_EVENTS:
                pending.append((event, statement))
            elif event.dagster_event_type in ASSET_CHECK_EVENTS:
                mirror_pending()
                with self.index_connection() as conn, db_result(conn, statement) as result:
                    event_id = result.inserted_primary_key[0]
                self.store_asset_check_event(event, event_id)
        mirror_pending()

    def _dispose_engines(self) -> None:
        with self._db_lock:
            engines, self._engines = self._engines, OrderedDict()
        for engine in engines.values():
            engine.dispose()

    def wipe(self) -> None:
        # The run shards' files are deleted: no connection may stay open on them.
        self._dispose_engines()
        super().wipe()

    def dispose(self) -> None:
        self._dispose_engines()
        super().dispose()
