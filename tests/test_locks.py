from __future__ import annotations

import threading
from pathlib import Path

import pytest

from meridian.locks import LockTimeout, file_lock


def test_a_second_writer_waits_and_is_told_so(tmp_path: Path):
    lock = tmp_path / "warehouse.lock"
    waits: list[str] = []
    second = file_lock(lock, timeout_s=0.3, poll_s=0.05, on_wait=lambda: waits.append("waiting"))
    with file_lock(lock), pytest.raises(LockTimeout, match="still locked by another process"), second:
        pass
    assert waits == ["waiting"]


def test_the_lock_is_free_again_once_the_holder_leaves(tmp_path: Path):
    lock = tmp_path / "warehouse.lock"
    released = threading.Event()
    acquired = threading.Event()

    def holder() -> None:
        with file_lock(lock):
            acquired.set()
            released.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    acquired.wait(5)
    released.set()
    with file_lock(lock, timeout_s=5, poll_s=0.05):
        pass
    thread.join()


def test_readers_share_the_lock_but_exclude_a_writer(tmp_path: Path):
    lock = tmp_path / "warehouse.lock"
    writer = file_lock(lock, timeout_s=0.2, poll_s=0.05)
    with (
        file_lock(lock, shared=True),
        file_lock(lock, shared=True, timeout_s=0.2),
        pytest.raises(LockTimeout),
        writer,
    ):
        pass
