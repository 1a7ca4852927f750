"""Where a region's landing zone lives: a local folder (the embedded default) or a prefix of
a bucket on the region's own object store (meridian.object_store).

Both answer the same four questions for meridian.landing: what is delivered (and what
breaks the naming contract), the bytes of one delivered file, whether a file is as it was
last seen (locally: size and mtime, then its hash; on object storage: its ETag), and, for
the generator as a producer, whether a key exists and how to put one.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from meridian.lake import write_bytes_atomic
from meridian.object_store import S3Location, landing_location, list_objects

FEED_NAMES = ("transactions", "chargebacks")
FORMATS = (".parquet", ".csv", ".jsonl", ".ndjson")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class LandedFile:
    key: str  # <feed>/<day>/<name>, relative to the landing zone
    size: int
    mtime_ns: int
    store_etag: str | None = None  # the object store's ETag; None for a local file


@dataclass(frozen=True)
class Misplaced:
    key: str
    reason: str


def _is_day(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return DAY.match(text) is not None


def key_problem(key: str, feed: str) -> str | None:
    """Why a visible key breaks the naming contract, or None."""
    parts = key.split("/")
    name = parts[-1]
    if len(parts) != 3 or not _is_day(parts[1]):
        return f"not under {feed}/<YYYY-MM-DD>/: the folder must be the UTC day of its events"
    if os.path.splitext(name)[1].lower() not in FORMATS:
        return f"format {os.path.splitext(name)[1] or '(none)'!r} is not one of {list(FORMATS)}"
    if not NAME.match(name):
        # Said whole (before: "letters, digits, '.', '_' or '-'" for a name like "-x.csv" or a
        # 240-character one, which are only those characters).
        return (
            "name must start with a letter or digit and go on with letters, digits, '.', '_' or '-', "
            "at most 200 characters"
        )
    return None


def md5_of(chunks: Iterable[bytes]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


LINK = "a symbolic link: only files delivered into the zone are read"


class LocalLanding:
    """The landing zone as a folder of the region's root."""

    def __init__(self, root: Path):
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def scan(
        self, feeds: Iterable[str] = FEED_NAMES, day: str | None = None
    ) -> tuple[list[LandedFile], list[Misplaced]]:
        """Delivered files (of one day's folder when `day` is given) and misplaced ones."""
        files: list[LandedFile] = []
        misplaced: list[Misplaced] = []
        for feed in feeds:
            top = self.root / feed / day if day else self.root / feed
            if top.is_symlink():
                misplaced.append(Misplaced(top.relative_to(self.root).as_posix(), LINK))
                continue
            if not top.is_dir():
                continue
            for dirpath, dirs, names in os.walk(top):
                for name in [d for d in dirs if (Path(dirpath) / d).is_symlink()]:
                    misplaced.append(
                        Misplaced((Path(dirpath) / name).relative_to(self.root).as_posix(), LINK)
                    )
                for name in sorted(names):
                    if name.startswith("."):
                        continue  # in flight: written under a hidden name, renamed when whole
                    path = Path(dirpath) / name
                    key = path.relative_to(self.root).as_posix()
                    try:
                        info = path.lstat()
                    except FileNotFoundError:
                        continue  # renamed or removed meanwhile
                    if not stat.S_ISREG(info.st_mode):
                        # A link could point at another zone's data; a pipe would block the reader.
                        problem = "not a regular file (a symbolic link, pipe or device): only files are read"
                    else:
                        problem = key_problem(key, feed)
                    if problem:
                        misplaced.append(Misplaced(key, problem))
                    else:
                        files.append(LandedFile(key, info.st_size, info.st_mtime_ns))
        return files, misplaced

    def chunks(self, landed: LandedFile) -> Iterator[bytes]:
        """The file's bytes, never through a symbolic link (swapped in after the scan, it could
        point at another zone's data)."""
        fd = os.open(self.root / landed.key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def unchanged(self, landed: LandedFile, seen: dict) -> bool:
        if (seen["size"], seen["mtime_ns"]) == (landed.size, landed.mtime_ns):
            return True  # as last seen: not hashed again
        return landed.size == seen["size"] and md5_of(self.chunks(landed)) == seen["etag"]

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def put(self, key: str, content: bytes) -> None:
        """Deliver as a producer must: under a hidden name, then renamed into place."""
        write_bytes_atomic(content, self.root / key)


class S3Landing:
    """The landing zone as a prefix of a bucket on the region's object store, reached with the
    region's own credentials only."""

    def __init__(self, location: S3Location):
        self.location = location
        self._client = None

    def __str__(self) -> str:
        return f"{self.location.url} at {self.location.endpoint_url or 'AWS'}"

    @property
    def client(self):
        if self._client is None:
            self._client = self.location.client()
        return self._client

    def scan(
        self, feeds: Iterable[str] = FEED_NAMES, day: str | None = None
    ) -> tuple[list[LandedFile], list[Misplaced]]:
        """Delivered objects (under one day's prefix when `day` is given) and misplaced ones."""
        files: list[LandedFile] = []
        misplaced: list[Misplaced] = []
        for feed in feeds:
            for item in list_objects(self.location, self.client, f"{feed}/{day}/" if day else f"{feed}/"):
                if item.key.rsplit("/", 1)[-1].startswith("."):
                    continue  # a producer's in-flight name
                problem = key_problem(item.key, feed)
                if problem:
                    misplaced.append(Misplaced(item.key, problem))
                    continue
                mtime_ns = int(item.last_modified.timestamp() * 1e9)
                files.append(LandedFile(item.key, item.size, mtime_ns, store_etag=item.etag))
        return files, misplaced

    def chunks(self, landed: LandedFile) -> Iterator[bytes]:
        response = self.client.get_object(Bucket=self.location.bucket, Key=self.location.key(landed.key))
        body = response["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def unchanged(self, landed: LandedFile, seen: dict) -> bool:
        return landed.store_etag is not None and landed.store_etag == seen.get("store_etag")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.location.key(key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def put(self, key: str, content: bytes) -> None:
        """An object appears whole or not at all (S3 has no partial objects)."""
        self.client.put_object(Bucket=self.location.bucket, Key=self.location.key(key), Body=content)


def landing_root(region_root: Path) -> Path:
    """The region's landing folder (the embedded default's zone)."""
    return region_root / "landing"


def landing_for(region: str, region_root: Path) -> LocalLanding | S3Landing:
    """The region's landing zone: on its object store when configured, else its local folder."""
    location = landing_location(region)
    return S3Landing(location) if location else LocalLanding(landing_root(region_root))
