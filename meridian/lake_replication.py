"""Replication of a Delta table from a region's object store to its DR region's, by its commit log.

A Delta table is data files plus a log of commits (`_delta_log/<version>.json`, checkpoints);
a reader sees exactly the versions the log holds. So a replica is consistent at every moment
if each log entry arrives only after every data file it references:

1. Read both logs. The replica's newest version must be the source's same version (same
   bytes): otherwise the replica has commits of its own (a DR site that took writes) and
   replicating over it would lose them: `ReplicaDiverged`, nothing copied.
2. Collect the data files the new versions add (from a checkpoint when the source's older
   log entries were cleaned up) and check residency on the table's schema, before any byte moves.
3. Copy the data files the replica lacks, concurrently. Each is checksummed end to end: its
   MD5 is compared with the source's ETag when read, and its CRC32 is sent with the write so
   the target refuses bytes that changed in transit; its xxh3 is stored in the object's metadata.
4. Copy the log entries in version order, each a put-if-absent, then `_last_checkpoint`.

Incremental: a run reads only the log entries newer than the replica's version and copies only
the files they add. Resumable: a run killed in step 3 leaves complete objects the next run
finds (same size and ETag) and does not copy again; killed in step 4, it leaves a replica at an
older version whose files are all there.

Each side is reached with its own region's endpoint and credentials (meridian.object_store):
the only process holding two regions' credentials is the replicator, and only for a region and
its DR region.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import orjson
import xxhash

from meridian.faults import failpoint
from meridian.governance import Policy, check_columns_transfer
from meridian.object_store import S3Location, StoredObject, list_objects
from meridian.topology import Topology

THREADS = 8
LOG_DIR = "_delta_log"
_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(\.\d{10}\.\d{10})?\.parquet$")


class LakeReplicationError(RuntimeError):
    """A table cannot be replicated; the message names the table, both sides and the cause."""


class ReplicaDiverged(LakeReplicationError):
    """The replica holds commits the source does not: replicating would overwrite them."""


@dataclass
class TableReplication:
    table: str
    source_version: int | None
    replica_version_before: int | None
    replica_version: int | None
    log_entries_copied: int = 0
    data_files_copied: int = 0
    data_files_present: int = 0  # referenced, and already on the replica (earlier or resumed run)
    bytes_copied: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Log:
    commits: dict[int, StoredObject]
    checkpoints: dict[int, list[StoredObject]]
    last_checkpoint: StoredObject | None

    @property
    def version(self) -> int | None:
        return max([*self.commits, *self.checkpoints], default=None)


def _read_log(location: S3Location, client, table: str) -> _Log:
    commits: dict[int, StoredObject] = {}
    checkpoints: dict[int, list[StoredObject]] = {}
    last = None
    for item in list_objects(location, client, f"{table}/{LOG_DIR}/"):
        name = item.key.rsplit("/", 1)[-1]
        if match := _COMMIT.match(name):
            commits[int(match[1])] = item
        elif match := _CHECKPOINT.match(name):
            checkpoints.setdefault(int(match[1]), []).append(item)
        elif name == "_last_checkpoint":
            last = item
    return _Log(commits, checkpoints, last)


def _get(location: S3Location, client, key: str) -> bytes:
    return client.get_object(Bucket=location.bucket, Key=location.key(key))["Body"].read()


def _actions(payload: bytes) -> Iterable[dict]:
    for line in payload.splitlines():
        if line.strip():
            yield orjson.loads(line)


def _data_path(table: str, add: dict) -> str:
    path = add["path"]
    if "://" in path or path.startswith("/"):
        raise LakeReplicationError(f"{table}: data file {path!r} lies outside the table (a shallow clone?)")
    if add.get("deletionVector"):
        raise LakeReplicationError(
            f"{table}: {path} has a deletion vector, which this replicator does not copy"
        )
    return f"{table}/{unquote(path)}"


def _checkpoint_adds(table: str, payloads: list[bytes]) -> tuple[set[str], dict | None]:
    import io

    import pyarrow.parquet as pq

    files, metadata = set(), None
    for payload in payloads:
        frame = pq.read_table(io.BytesIO(payload), columns=["add", "metaData"])
        for add in frame.column("add").to_pylist():
            if add:
                files.add(_data_path(table, add))
        for meta in frame.column("metaData").to_pylist():
            metadata = meta or metadata
    return files, metadata


def _check_residency(
    topology: Topology,
    policy: Policy,
    source: S3Location,
    target: S3Location,
    table: str,
    metadata: dict | None,
) -> None:
    """governance's transfer rule on the table's schema (its newest metaData action)."""
    columns = None
    if metadata is not None:
        columns = [field["name"] for field in orjson.loads(metadata["schemaString"])["fields"]]
    check_columns_transfer(
        topology, policy, source.region, target.region, {table: columns}, f"replication of {table}"
    )


def _copy(source: S3Location, src, target: S3Location, dst, rel: str, listed: StoredObject) -> int:
    body = _get(source, src, rel)
    md5 = hashlib.md5(body)
    if "-" not in listed.etag and md5.hexdigest() != listed.etag:
        raise LakeReplicationError(
            f"{source.url}/{rel}: read {len(body)} bytes whose MD5 is not the object's ETag"
        )
    # The write is checked by the target: botocore sends the body's CRC32 (x-amz-checksum-crc32)
    # and the store refuses bytes that do not match it. (A Content-MD5 as well was a second
    # check of the same bytes: one more MD5 pass in the store for nothing.)
    dst.put_object(
        Bucket=target.bucket,
        Key=target.key(rel),
        Body=body,
        ChecksumAlgorithm="CRC32",
        Metadata={"xxh3-128": xxhash.xxh3_128_hexdigest(body), "source-etag": listed.etag},
    )
    failpoint("lake_replication.file_copied")
    return len(body)


def _put_log_entry(target: S3Location, dst, key: str, body: bytes, table: str) -> bool:
    """Put-if-absent; an entry already there is fine when it is the same bytes (a resumed run)."""
    from botocore.exceptions import ClientError

    try:
        dst.put_object(Bucket=target.bucket, Key=target.key(key), Body=body, IfNoneMatch="*")
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in (
            "PreconditionFailed",
            "412",
            "ConditionalRequestConflict",
        ):
            raise
    if _get(target, dst, key) != body:
        raise ReplicaDiverged(f"{table}: the replica's {key} was written by someone else meanwhile")
    return False


def replicate_table(
    source: S3Location,
    target: S3Location,
    table: str,
    topology: Topology,
    policy: Policy,
    threads: int = THREADS,
) -> TableReplication:
    """Bring the replica of `table` at `target` up to the source's newest version (see the module)."""
    started = time.perf_counter()
    src, dst = source.client(), target.client()
    source_log, replica_log = _read_log(source, src, table), _read_log(target, dst, table)
    result = TableReplication(table, source_log.version, replica_log.version, replica_log.version)
    if source_log.version is None:
        raise LakeReplicationError(f"{table}: {source.url}/{table} is not a Delta table (no commit log)")
    start = -1 if replica_log.version is None else replica_log.version
    if start > source_log.version:
        raise ReplicaDiverged(
            f"{table}: the replica is at version {start}, ahead of the source's {source_log.version}"
        )
    same_start = start in source_log.commits and start in replica_log.commits
    if start >= 0 and same_start and source_log.commits[start].etag != replica_log.commits[start].etag:
        raise ReplicaDiverged(
            f"{table}: the replica's version {start} differs from the source's: the DR site committed "
            "its own writes; merge them back (failback) before replicating again"
        )
    if start == source_log.version:
        result.seconds = time.perf_counter() - started
        return result

    # The versions to bring over, from a checkpoint where the log before it was cleaned up.
    base: int | None = None
    if start + 1 not in source_log.commits:
        usable = [
            c
            for c in source_log.checkpoints
            if c > start and all(v in source_log.commits for v in range(c + 1, source_log.version + 1))
        ]
        if not usable:
            raise LakeReplicationError(
                f"{table}: the source's log has no entry {start + 1} and no checkpoint to start from"
            )
        base = max(usable)
    first = start + 1 if base is None else base + 1
    versions = list(range(first, source_log.version + 1))
    missing = [v for v in versions if v not in source_log.commits]
    if missing:
        raise LakeReplicationError(f"{table}: the source's log is missing versions {missing[:5]}")

    # Reads are safe in any order: the log entries (and the checkpoints among them) at once.
    later_checkpoints = [item.key for v in versions for item in source_log.checkpoints.get(v, [])]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        keys = [source_log.commits[v].key for v in versions] + later_checkpoints
        bodies = dict(zip(keys, pool.map(lambda key: _get(source, src, key), keys), strict=True))
    entries = {v: bodies[source_log.commits[v].key] for v in versions}
    needed, metadata = set(), None
    checkpoint_bodies: list[tuple[str, bytes]] = []
    if base is not None:
        checkpoint_bodies = [(item.key, _get(source, src, item.key)) for item in source_log.checkpoints[base]]
        needed, metadata = _checkpoint_adds(table, [body for _, body in checkpoint_bodies])
    for version in versions:
        for action in _actions(entries[version]):
            if "add" in action:
                needed.add(_data_path(table, action["add"]))
            metadata = action.get("metaData", metadata)
    if metadata is None and replica_log.version is not None:
        metadata = _latest_metadata(source, src, table, source_log)
    _check_residency(topology, policy, source, target, table, metadata)

    source_files = {o.key: o for o in list_objects(source, src, f"{table}/") if f"/{LOG_DIR}/" not in o.key}
    replica_files = {o.key: o for o in list_objects(target, dst, f"{table}/") if f"/{LOG_DIR}/" not in o.key}
    absent = sorted(needed - source_files.keys())
    if absent:
        raise LakeReplicationError(
            f"{table}: the source's log references {len(absent)} file(s) it does not hold: {absent[:3]}"
        )
    to_copy = []
    for rel in sorted(needed):
        have = replica_files.get(rel)
        if have is not None and have.size == source_files[rel].size and have.etag == source_files[rel].etag:
            result.data_files_present += 1
        else:
            to_copy.append(rel)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        result.bytes_copied = sum(
            pool.map(lambda rel: _copy(source, src, target, dst, rel, source_files[rel]), to_copy)
        )
    result.data_files_copied = len(to_copy)

    # Only now the log: each entry after all the files it references, in version order.
    for key, body in checkpoint_bodies:
        _put_log_entry(target, dst, key, body, table)
    for version in versions:
        if _put_log_entry(target, dst, source_log.commits[version].key, entries[version], table):
            result.log_entries_copied += 1
        failpoint("lake_replication.log_entry_copied")
        result.replica_version = version
        for item in source_log.checkpoints.get(version, []):
            _put_log_entry(target, dst, item.key, bodies[item.key], table)
    if source_log.last_checkpoint is not None:
        dst.put_object(
            Bucket=target.bucket,
            Key=target.key(source_log.last_checkpoint.key),
            Body=_get(source, src, source_log.last_checkpoint.key),
        )
    result.seconds = time.perf_counter() - started
    return result


def _latest_metadata(source: S3Location, client, table: str, log: _Log) -> dict | None:
    """The table's newest metaData action, walking the log back from its newest entry."""
    for version in sorted(log.commits, reverse=True):
        for action in _actions(_get(source, client, log.commits[version].key)):
            if "metaData" in action:
                return action["metaData"]
        if version in log.checkpoints:
            return _checkpoint_adds(table, [_get(source, client, i.key) for i in log.checkpoints[version]])[1]
    return None


def replicate_region_lake(
    topology: Topology, policy: Policy, source_paths, target_paths, tables: Iterable[str]
) -> list[TableReplication]:
    """Each of `tables` of a region whose lake is on object storage, to its replica in its DR
    region's bucket: `<DR storage root>/replicas/<region>/lake/<table>` (beside the DR region's
    own lake, never in it).

    Both regions' storage roots must be on object storage (`RegionPaths.lake_url`); each side
    is reached with its own region's endpoint and credentials."""
    missing = [p.region for p in (source_paths, target_paths) if p.lake_url is None]
    if missing:
        raise LakeReplicationError(
            f"replicating {source_paths.region}'s lake on object storage needs the DR region's on object "
            f"storage too: {', '.join(missing)} has a local storage_root"
        )
    source, target = source_paths.lake_location.s3, replica_location(target_paths, source_paths.region)
    done = []
    for table in tables:
        if source_paths.lake_location.table(table).version() is None:
            continue  # nothing ingested into it yet
        done.append(replicate_table(source, target, table, topology, policy))
    return done


def replica_location(dr_paths, region: str) -> S3Location:
    """Where region's lake replica lives in its DR region's bucket, with the DR region's credentials."""
    from dataclasses import replace

    from meridian.object_store import parse_s3_url
    from meridian.paths import replica_lake_url

    _, prefix = parse_s3_url(replica_lake_url(dr_paths, region))
    return replace(dr_paths.lake_location.s3, prefix=prefix)


def rewind_replica(target: S3Location, table: str, version: int | None) -> int:
    """Remove the replica's commits after `version` (a DR site's own, merged back into the
    source by its failback), newest first, so a reader sees an older committed version at
    every moment; then replicate_table brings the source's newer commits over. Returns the
    commits removed. Their data files stay until a vacuum: no remaining version names them."""
    client = target.client()
    log = _read_log(target, client, table)
    keep = -1 if version is None else version
    doomed = [(v, item.key) for v, item in log.commits.items() if v > keep]
    doomed += [(v, item.key) for v, items in log.checkpoints.items() if v > keep for item in items]
    if log.last_checkpoint is not None and doomed:  # it may name a removed checkpoint: listed anew without it
        client.delete_object(Bucket=target.bucket, Key=target.key(log.last_checkpoint.key))
    for _, key in sorted(doomed, reverse=True):
        client.delete_object(Bucket=target.bucket, Key=target.key(key))
    return sum(1 for v in log.commits if v > keep)


@dataclass
class ReplicaLag:
    table: str
    source_version: int | None
    replica_version: int | None
    versions_behind: int | None  # None: a side could not be read (`problem` says which)
    lag_seconds: float  # since the oldest commit the replica lacks was written (0: in step)
    problem: str | None = None


def replica_lags(
    source: S3Location, target: S3Location, tables: Iterable[str], now: float | None = None
) -> list[ReplicaLag]:
    """How far the replica of each of `tables` is behind its source, from the two logs'
    listings only (no object is read). An endpoint that does not answer is a `problem`, never a
    wait: the clients give up after their connect and read timeouts (meridian.object_store)."""
    now = time.time() if now is None else now
    clients = {"source": source.client(), "replica": target.client()}
    lags = []
    for table in tables:
        logs = {}
        for side, location in (("source", source), ("replica", target)):
            try:
                logs[side] = _read_log(location, clients[side], table)
            except Exception as error:  # the endpoint down or frozen, credentials refused
                reason = str(error).splitlines()[0][:160]
                problem = f"{side} {location.url} unreachable: {reason}"
                lags.append(ReplicaLag(table, None, None, None, 0.0, problem))
                break
        else:
            have, want = logs["replica"].version, logs["source"].version
            behind = (want if want is not None else -1) - (have if have is not None else -1)
            first_missing = logs["source"].commits.get((have if have is not None else -1) + 1)
            lag = (
                max(0.0, now - first_missing.last_modified.timestamp())
                if behind > 0 and first_missing
                else 0.0
            )
            lags.append(ReplicaLag(table, want, have, max(0, behind), lag))
    return lags
