"""Incremental, checksummed, table-consistent replication of a region's files to its DR pair.

A replica of one asset class of region R lives in the DR region's root:

    <dr root>/replicas/<R>/<class>/
        objects/<aa>/<xxh3-128>      content-addressed data files, immutable once renamed in
        manifests/<version>.json     {relative path: size, checksum} of one consistent version
        CURRENT                      {"version": n}: replaced atomically, last

A replication run copies every new or changed source file into `objects/` (read once:
hashed and written in the same pass, under a temporary name, renamed when complete),
then writes the manifest, then moves CURRENT. A reader resolves paths through CURRENT's
manifest, so it sees a whole version or the previous one, never a mix; a run killed
between files leaves CURRENT where it was, and the next run finds the objects that
arrived (by checksum) and does not copy them again.

Unchanged source files are recognised by (size, mtime_ns, inode) against the previous
run's source index, so an incremental run costs a `stat` per file plus the bytes that
changed. `scrub` re-hashes every object CURRENT references and deletes the ones whose
content no longer matches, so the next run copies them again.

Personal data: `replicate` calls the residency check on the files before any byte moves.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import xxhash

from meridian.faults import failpoint
from meridian.lake import sweep_temporaries, temporary_name, verify_readable, write_bytes_atomic

CHUNK = 1 << 20
KEEP_VERSIONS = 3
THREADS = 4
LINKABLE = (".parquet", ".json", ".csv", ".lgb", ".txt", ".yaml", ".yml", ".png")  # written by rename


class ReplicationError(RuntimeError):
    """A replica cannot be written or read; the message names the replica and the cause."""


class UnreadableSource(ReplicationError):
    """Source files that are not what their name says (a truncated Parquet file, broken JSON):
    nothing was published, the previous replica version stays current."""

    def __init__(self, replica: Path, problems: dict[str, str]):
        self.problems = problems
        listed = "; ".join(f"{rel}: {why}" for rel, why in sorted(problems.items())[:10])
        super().__init__(
            f"{len(problems)} unreadable source file(s) for {replica}; the replica keeps its current "
            f"version: {listed}"
        )


@dataclass(frozen=True)
class SourceFile:
    rel: str  # path inside the replica (usually the path under the region root)
    path: Path  # where the bytes are now


@dataclass
class ReplicationResult:
    version: int
    files: int
    bytes: int
    copied_files: int = 0
    copied_bytes: int = 0
    reused_files: int = 0  # changed source files whose object had already arrived
    unchanged_files: int = 0
    removed_files: int = 0
    seconds: float = 0.0
    published: bool = True
    changed: list[str] = field(default_factory=list)
    temporaries_removed: int = 0  # left by a killed run


def hash_file(path: Path) -> tuple[str, int]:
    digest = xxhash.xxh3_128()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def walk(root: Path, rels: Iterable[str]) -> list[SourceFile]:
    """Every regular file under `root/rel` for each rel (a file or a folder); hidden names skipped."""
    out: list[SourceFile] = []
    for rel in rels:
        base = root / rel
        if base.is_file():
            out.append(SourceFile(rel, base))
            continue
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.endswith((".tmp", "-wal", "-shm", ".lock")):
                    continue
                path = Path(dirpath) / name
                out.append(SourceFile(str(path.relative_to(root)), path))
    return out


class _Unreadable(Exception):
    pass


class Replica:
    """One replica directory (one class of one source region in its DR region)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.manifests = self.root / "manifests"
        self.current_file = self.root / "CURRENT"

    # ------------------------------------------------------------ reading

    def current_version(self) -> int | None:
        try:
            return int(orjson.loads(self.current_file.read_bytes())["version"])
        except FileNotFoundError:
            return None

    def manifest(self, version: int | None = None) -> dict | None:
        version = self.current_version() if version is None else version
        if version is None:
            return None
        return orjson.loads((self.manifests / f"{version:08d}.json").read_bytes())

    def object_path(self, checksum: str) -> Path:
        return self.objects / checksum[:2] / checksum

    def resolve(self, rel: str) -> Path:
        """The object holding `rel` in the current version."""
        manifest = self.manifest()
        if manifest is None or rel not in manifest["files"]:
            raise ReplicationError(f"{self.root}: no {rel!r} in the current replica version")
        return self.object_path(manifest["files"][rel]["checksum"])

    def checkout(self, target: Path, prefix: str = "") -> int:
        """Lay the current version out as plain files under `target` (files under `prefix`).

        Files that are only ever replaced by rename are hard-linked (no copy); databases
        and append-only logs are copied, since their writers modify them in place.
        """
        manifest = self.manifest()
        if manifest is None:
            raise ReplicationError(f"{self.root}: no replica version to check out")
        count = 0
        for rel, entry in manifest["files"].items():
            if not rel.startswith(prefix):
                continue
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_name(dest.parent, dest.name)
            source = self.object_path(entry["checksum"])
            if rel.endswith(LINKABLE):
                os.link(source, tmp)
            else:
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
            count += 1
        return count

    # ------------------------------------------------------------ writing

    def _index_path(self) -> Path:
        return self.root / "source-index.json"

    def _journal_path(self) -> Path:
        return self.root / "source-index.journal"

    def _load_index(self) -> dict[str, list]:
        """The last run's source index, plus the journal of objects a killed run had copied."""
        try:
            index = orjson.loads(self._index_path().read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            index = {}
        try:
            with open(self._journal_path(), "rb") as journal:
                for line in journal:
                    try:
                        rel, *entry = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # a line cut by the crash
                    index[rel] = entry
        except FileNotFoundError:
            pass
        return index

    def _journal(self, rel: str, stat: tuple[int, int, int], checksum: str) -> None:
        # One O_APPEND write per line: lines of concurrent copies never interleave.
        fd = os.open(self._journal_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, orjson.dumps([rel, *stat, checksum]) + b"\n")
        finally:
            os.close(fd)

    def _copy(self, source: SourceFile, durable: bool = True) -> tuple[str, int, tuple[int, int, int], bool]:
        """Read `source` once: hash and write to a temporary object; rename it into place."""
        self.objects.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(self.objects, "object")
        digest = xxhash.xxh3_128()
        size = 0
        try:
            with open(source.path, "rb") as src, open(tmp, "wb") as dst:
                st = os.fstat(src.fileno())  # the version we read, even if renamed over meanwhile
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                if durable:  # on disk before any manifest can name it
                    os.fsync(dst.fileno())
            # What is published must be readable: the copy itself is checked, not the source,
            # which a writer may replace meanwhile.
            failpoint("replication.object_copied")
            problem = verify_readable(tmp, source.rel)
            if problem is not None:
                raise _Unreadable(problem)
            checksum = digest.hexdigest()
            stat = (st.st_size, st.st_mtime_ns, st.st_ino)
            final = self.object_path(checksum)
            copied = not final.exists()
            if copied:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            self._journal(source.rel, stat, checksum)
            failpoint("replication.object_written")
            return checksum, size, stat, copied
        finally:
            tmp.unlink(missing_ok=True)

    def replicate(
        self,
        sources: list[SourceFile],
        *,
        meta: dict | None = None,
        check: Callable[[list[Path]], None] | None = None,
        threads: int = THREADS,
        durable: bool = True,
    ) -> ReplicationResult:
        """Publish a new version holding exactly `sources`; copy only what the replica lacks."""
        started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        swept = sweep_temporaries(self.root)  # objects a killed run never renamed into place
        index = self._load_index()
        previous = self.manifest() or {"files": {}}
        entries: dict[str, dict] = {}
        to_copy: list[SourceFile] = []
        unchanged = 0
        for source in sources:
            try:
                st = source.path.stat()
            except FileNotFoundError:
                continue  # removed since the walk: not part of this version
            known = index.get(source.rel)
            if (
                known is not None
                and tuple(known[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino)
                and self.object_path(known[3]).exists()
            ):
                entries[source.rel] = {"size": st.st_size, "checksum": known[3]}
                unchanged += 1
            else:
                to_copy.append(source)
        if check is not None:
            check([s.path for s in to_copy])  # refuse before any byte moves
        result = ReplicationResult(
            version=0, files=0, bytes=0, unchanged_files=unchanged, temporaries_removed=len(swept)
        )
        new_index = {rel: index[rel] for rel in entries}
        problems: dict[str, str] = {}

        def copy(source: SourceFile):
            try:
                return self._copy(source, durable)
            except _Unreadable as error:
                problems[source.rel] = str(error)
                return None

        if to_copy:
            with ThreadPoolExecutor(max(1, min(threads, len(to_copy)))) as pool:
                for source, copied_file in zip(to_copy, pool.map(copy, to_copy), strict=True):
                    if copied_file is None:
                        continue
                    checksum, size, stat, copied = copied_file
                    entries[source.rel] = {"size": size, "checksum": checksum}
                    new_index[source.rel] = [*stat, checksum]
                    if copied:
                        result.copied_files += 1
                        result.copied_bytes += size
                    else:
                        result.reused_files += 1
        if problems:
            # Never a version with an unreadable file: the good copies are journalled (the
            # next run reuses them), CURRENT stays where it was, and the caller alerts.
            raise UnreadableSource(self.root, problems)
        result.changed = sorted(
            rel
            for rel, e in entries.items()
            if previous["files"].get(rel, {}).get("checksum") != e["checksum"]
        )
        result.removed_files = len(set(previous["files"]) - set(entries))
        result.files = len(entries)
        result.bytes = sum(e["size"] for e in entries.values())
        current = self.current_version()
        if current is not None and not result.changed and not result.removed_files:
            result.version, result.published = current, False
        else:
            result.version = (current or 0) + 1
            manifest = {
                "version": result.version,
                "published_at": time.time(),
                "files": dict(sorted(entries.items())),
                **(meta or {}),
            }
            self.manifests.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(orjson.dumps(manifest), self.manifests / f"{result.version:08d}.json")
            failpoint("replication.before_publish")
            write_bytes_atomic(orjson.dumps({"version": result.version}), self.current_file)
            self._collect_garbage()
        write_bytes_atomic(orjson.dumps(new_index), self._index_path())
        self._journal_path().unlink(missing_ok=True)
        result.seconds = time.perf_counter() - started
        return result

    def _collect_garbage(self) -> None:
        """Drop manifests past the last KEEP_VERSIONS and the objects none of them references."""
        versions = sorted(int(p.stem) for p in self.manifests.glob("*.json"))
        keep = versions[-KEEP_VERSIONS:]
        for version in versions[:-KEEP_VERSIONS]:
            (self.manifests / f"{version:08d}.json").unlink(missing_ok=True)
        live = set()
        for version in keep:
            live |= {e["checksum"] for e in self.manifest(version)["files"].values()}
        for path in self.objects.glob("*/*"):
            if path.name not in live:
                path.unlink(missing_ok=True)

    def scrub(self) -> list[str]:
        """Re-hash every object of the current version; delete and return the corrupt ones."""
        manifest = self.manifest()
        if manifest is None:
            return []
        bad = []

        def check(item: tuple[str, dict]) -> str | None:
            rel, entry = item
            path = self.object_path(entry["checksum"])
            try:
                checksum, size = hash_file(path)
            except FileNotFoundError:
                return rel
            if checksum != entry["checksum"] or size != entry["size"]:
                path.unlink(missing_ok=True)
                return rel
            return None

        with ThreadPoolExecutor(THREADS) as pool:
            bad = [rel for rel in pool.map(check, manifest["files"].items()) if rel]
        return sorted(bad)

    def missing(self) -> list[str]:
        """Files of the current version whose object is absent (deleted by a scrub, or lost)."""
        manifest = self.manifest()
        if manifest is None:
            return []
        return sorted(
            rel for rel, e in manifest["files"].items() if not self.object_path(e["checksum"]).exists()
        )

    def unreplicated(self, sources: list[SourceFile]) -> list[SourceFile]:
        """Source files that differ from the current version (by size/mtime/inode), without reading them."""
        index = self._load_index()
        manifest = self.manifest() or {"files": {}}
        out = []
        for source in sources:
            try:
                st = source.path.stat()
            except FileNotFoundError:
                continue
            known = index.get(source.rel)
            entry = manifest["files"].get(source.rel)
            if (
                known is None
                or entry is None
                or tuple(known[:3]) != (st.st_size, st.st_mtime_ns, st.st_ino)
                or known[3] != entry["checksum"]
            ):
                out.append(source)
        return out
