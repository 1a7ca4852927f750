"""The online store as the service reads it: never created here, probed each poll, reopened on return."""

from __future__ import annotations

from meridian.online_store import OnlineRow, OnlineStore, OnlineStoreUnavailable, StoreReplaced


class ServedStore:
    """The region's online store as the service holds it: probed, never created, followed.

    The service opens the store without creating it: a missing file is a failed readiness
    check naming the file, never a new empty store that answers "unknown customer" for
    everyone. `check` (every poll interval) probes it with a real lookup on a fresh
    connection, so a store moved away, deleted, overwritten or corrupted is noticed even
    though open connections would keep reading the old file; while `error` is set every
    read raises OnlineStoreUnavailable (503). A store that comes back (the same file, or a
    new one at the path) is reopened and served again.

    A read that fails trips the store the same way (a circuit breaker): reads run on the
    event loop, so a store that hangs (a frozen Redis) would otherwise hold every request of
    every region for its timeout, one request after another. Tripped, the region answers
    503 at once until the next `check` finds the store answering. Writes (the background
    pushes) do not trip it: a rejected write is that write's failure.
    """

    def __init__(self, open_store):
        self._open = open_store
        self._store: OnlineStore | None = None
        self.error: str | None = "not checked yet"
        self.check()

    def check(self) -> str | None:
        had_error = self.error is not None
        if self._store is None:
            try:
                self._store = self._open()
            except Exception as error:  # missing, unreadable, unreachable: not ready, retried
                self.error = str(error) if isinstance(error, OnlineStoreUnavailable) else repr(error)
                return self.error
        try:
            try:
                self._store.probe()
                if had_error and hasattr(self._store, "reopen"):
                    self._store.reopen()  # connections opened before the fault read stale state
            except StoreReplaced:
                self._store.reopen()  # a file put back or swapped in: follow it (new connections)
                self._store.probe()
            self.error = None
        except OnlineStoreUnavailable as error:
            self.error = str(error)
        return self.error

    def _current(self) -> OnlineStore:
        if self.error is not None or self._store is None:
            raise OnlineStoreUnavailable(self.error or "online store is not open")
        return self._store

    def _reading(self, read):
        store = self._current()
        try:
            return read(store)
        except OnlineStoreUnavailable as error:
            self.error = str(error)  # tripped: 503 at once until `check` sees it answer
            raise

    def read(self, view: str, entity: str) -> OnlineRow | None:
        return self._reading(lambda store: store.read(view, entity))

    def read_keys(self, keys):
        return self._reading(lambda store: store.read_keys(keys))

    def read_many(self, view, entities):
        return self._reading(lambda store: store.read_many(view, entities))

    def write(self, rows):
        return self._current().write(rows)

    def write_frame(self, view, version, frame):
        return self._current().write_frame(view, version, frame)

    def count(self, view: str) -> int:
        return self._current().count(view)

    def iter_rows(self, view: str):
        return self._current().iter_rows(view)

    def ping(self) -> None:
        self._current().ping()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
