"""Advisory file locks that serialise writers of a region's DuckDB warehouse.

DuckDB lets one process write a database file at a time and refuses a second one
outright ("Could not set lock on file"). Two Dagster runs that touch the same region
(a backfill split into several runs, a UI launch during a scheduled run) must
therefore queue for the warehouse rather than fail. Different regions have different
lock files and run in parallel.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from meridian.roots import make_dirs


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (it may be a later one reusing it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class LockTimeout(TimeoutError):
    """The lock was still held by someone else when the wait ran out."""


@contextmanager
def file_lock(
    path: Path,
    *,
    shared: bool = False,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive (or shared) flock on `path`, waiting up to `timeout_s` for it."""
    make_dirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + timeout_s
    waited = False
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait:
                    on_wait()
                waited = True
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{path} is still locked by another process after {timeout_s:.0f}s"
                    ) from None
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
