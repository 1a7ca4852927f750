"""The serving stream log: every scoring decision, with its transaction, as JSON lines.

The scoring service appends one entry per response to `regions/<r>/stream/decisions/`.
Two Dagster assets micro-batch it into the lake: the decisions (for A/B analysis and
monitoring) and the served transactions (into `raw_transactions`, so the batch graph
sees what was served). One log serves both, so a transaction and its decision can never
disagree about having happened.

Writing never blocks a response: `append` puts the entry on an in-memory queue and
returns; a background thread wakes every `flush_seconds` and writes whatever is queued
with one `write` + `flush` to the operating system.

Crash window (tested in tests/test_stream_log.py): a process that dies (SIGKILL, OOM)
loses only entries still on the queue, i.e. those appended during the last
`flush_seconds` (default 0.2 s), plus at most one partial last line, which readers skip.
Entries flushed to the OS survive the process; surviving a power loss as well needs the
fsync that follows every `fsync_seconds` (default 1 s). If the queue is full
(`max_queue`, a writer that cannot keep up), the entry is dropped, never waited for, and
counted in `dropped`, which the service reports on /readyz and in its logs.

Files: one segment per writer (`<utc start>-<pid>-<n>.jsonl`), rotated at
`segment_bytes`. Readers consume segments by byte offset, complete lines only.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from meridian.roots import make_dirs

log = logging.getLogger("meridian.stream_log")


def stream_dir(region_root: Path) -> Path:
    return region_root / "stream" / "decisions"


class StreamLogWriter:
    def __init__(
        self,
        directory: Path,
        flush_seconds: float = 0.2,
        fsync_seconds: float = 1.0,
        max_batch: int = 2_000,
        max_queue: int = 200_000,
        segment_bytes: int = 64 * 2**20,
    ):
        self.directory = Path(directory)
        make_dirs(self.directory)
        self.flush_seconds = flush_seconds
        self.fsync_seconds = fsync_seconds
        self.max_batch = max_batch
        self.segment_bytes = segment_bytes
        self.dropped = 0
        self.accepted = 0
        self._count_lock = threading.Lock()
        self.written = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=max_queue)
        self._segment = 0
        self._start = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._handle = self._open()
        self._last_fsync = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"stream-log-{self.directory}", daemon=True)
        self._thread.start()

    def _open(self):
        self._segment += 1
        name = f"{self._start}-{os.getpid()}-{self._segment:05d}.jsonl"
        return open(self.directory / name, "ab")

    @property
    def current_segment(self) -> Path:
        return Path(self._handle.name)

    def append(self, entry: dict[str, object]) -> bool:
        """Queue one entry; never blocks. False (and counted) when the queue is full."""
        try:
            line = orjson.dumps(entry, default=str)
            with self._count_lock:  # scoring threads append concurrently
                self._queue.put_nowait(line)
                self.accepted += 1
            return True
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("stream log %s is not keeping up: %d entries dropped", self.directory, self.dropped)
            return False

    def _run(self) -> None:
        # Sleep, then drain everything queued at once: the request threads never wake this
        # thread per entry (a wake-up per entry costs the event loop a GIL hand-off each).
        done = False
        while not done:
            time.sleep(self.flush_seconds)
            while True:
                lines: list[bytes] = []
                try:
                    while len(lines) < self.max_batch:
                        item = self._queue.get_nowait()
                        if item is None:
                            done = True
                            break
                        lines.append(item)
                except queue.Empty:
                    pass
                if lines:
                    self._write(lines)
                if done or len(lines) < self.max_batch:
                    break
            if time.monotonic() - self._last_fsync >= self.fsync_seconds or done:
                os.fsync(self._handle.fileno())
                self._last_fsync = time.monotonic()
        self._handle.close()

    def _write(self, lines: list[bytes]) -> None:
        self._handle.write(b"\n".join(lines) + b"\n")
        self._handle.flush()
        self.written += len(lines)
        if self._handle.tell() >= self.segment_bytes:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = self._open()

    def wait_written(self, timeout: float = 10.0) -> bool:
        """Wait until every entry accepted so far is written to the segment; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.written < self.accepted:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, fsync, stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)


@dataclass(frozen=True)
class BadLine:
    """A complete line of the log that is no entry: kept with its place and reason, never dropped."""

    segment: str
    byte_offset: int
    text: str
    reason: str


@dataclass(frozen=True)
class StreamBatch:
    entries: list[dict]
    positions: list[tuple[str, int]]  # (segment, byte offset) of each entry
    offsets: dict[str, int]  # where the next read starts
    bad: list[BadLine]


def read_batch(directory: Path, offsets: dict[str, int]) -> StreamBatch:
    """Complete entries past `offsets` in every segment, with their positions; the new offsets.

    A partial last line (a writer killed mid-write, or one still writing) is left for the
    next read: the offset stops at the last newline. A complete line that is not a JSON
    object cannot be fixed by waiting: it is returned in `bad` with its position and reason,
    for the caller to quarantine, and the read goes past it.
    """
    entries: list[dict] = []
    positions: list[tuple[str, int]] = []
    bad: list[BadLine] = []
    new_offsets = dict(offsets)
    for path in sorted(Path(directory).glob("*.jsonl")) if Path(directory).exists() else []:
        start = offsets.get(path.name, 0)
        if path.stat().st_size <= start:
            continue
        with open(path, "rb") as handle:
            handle.seek(start)
            chunk = handle.read()
        end = chunk.rfind(b"\n") + 1
        position = start
        for line in chunk[:end].split(b"\n")[:-1]:
            here, position = position, position + len(line) + 1
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                reason = None if isinstance(entry, dict) else f"a JSON {type(entry).__name__}, not an object"
            except orjson.JSONDecodeError as error:
                reason = f"not JSON: {error}"
            if reason is None:
                entries.append(entry)
                positions.append((path.name, here))
            else:
                bad.append(BadLine(path.name, here, line[:4096].decode("utf-8", "replace"), reason))
        new_offsets[path.name] = start + end
    return StreamBatch(entries, positions, new_offsets, bad)


def read_new(directory: Path, offsets: dict[str, int]) -> tuple[list[dict], dict[str, int], int]:
    """`read_batch` as (entries, new offsets, number of bad lines)."""
    batch = read_batch(directory, offsets)
    return batch.entries, batch.offsets, len(batch.bad)


def iter_all(directory: Path) -> Iterator[dict]:
    yield from read_batch(directory, {}).entries
