"""The lake's tables as Delta Lake tables, on a local folder or on a region's object store.

Longer than ~450 lines on purpose: it is the one owner of the Delta log (commit with retry,
read-back of a commit's add actions, versions, changed partitions, checkpoints); split, the
log's format would be read in two places.

One code path serves both: a `LakeLocation` is a folder (the embedded default) or
`s3://bucket/prefix` reached through the region's own endpoint and credentials
(meridian.object_store). A `LakeTable` is a Delta table under it, partitioned by its
partition columns (`day`, and for tables two producers write, `origin`).

What the format gives, and what this module adds to it:
- **Atomic replacement.** `replace` swaps one partition (one day, one producer's share of a
  day) in one commit: delta-rs writes the new data files, then commits a log entry that adds
  them and removes the old ones. A reader resolves the table through the log, so it sees the
  previous version or the new one, never a mix; a writer killed before its commit leaves data
  files no version references (invisible to every reader).
- **Concurrent writers.** A commit is a put-if-absent of the next log entry (on S3, a
  conditional put: `conditional_put=etag`; locally, a link that fails if the name exists). Of
  two writers racing for one version, one wins and the other gets `CommitFailedError`; we
  retry it against the new version, a bounded number of times, then raise
  `LakeCommitConflict` naming the table. Nothing is ever overwritten blindly.
- **Versions.** Every commit is a version; `read(version=...)` reads the table as it was, and
  a training set records the versions it read (meridian.training_set) so rebuilding it at
  those versions gives the same rows.
"""

from __future__ import annotations

import dataclasses
import random
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meridian.object_store import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, S3Location

if TYPE_CHECKING:  # pyarrow.dataset imports pandas (0.3 s): only the table's reads need it
    import pyarrow.dataset

# The lake's Delta tables and their partition columns. `origin` separates what two producers
# write into one day: the source's delivery (`source`) and the scoring service's (`served`),
# each replaced without touching the other.
DELTA_TABLES: dict[str, tuple[str, ...]] = {
    "raw_transactions": ("day", "origin"),
    "quarantined_transactions": ("day", "origin"),
    "raw_labels": ("day",),
    "quarantined_labels": ("day",),
}
COMMIT_ATTEMPTS = 8
# A checkpoint every 10 commits (delta-rs writes it after the commit that reaches it): opening a
# table reads the newest checkpoint and at most 9 log entries, not every entry since version 0.
# Without it a day-by-day backfill on object storage cost one GET per earlier day per commit.
CHECKPOINT_INTERVAL = 10
TABLE_PROPERTIES = {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}
WRITE_ID = "meridian.write_id"
# A partition value goes into a commit's predicate: only plain tokens are accepted.
_PARTITION_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class LakeTableError(RuntimeError):
    """A lake table cannot be written or read; the message names the table and the cause."""


class LakeCommitConflict(LakeTableError):
    """Other writers kept committing to the table: the write was not applied (nothing partial is visible)."""


@dataclass(frozen=True)
class LakeLocation:
    """Where a region's lake tables live: an absolute local folder, or a prefix of the region's bucket."""

    uri: str
    s3: S3Location | None = None
    # A bound on each call to the store, retries included (a health probe's budget); None:
    # the pipeline's, where a data file may take a while (see storage_options).
    deadline_s: float | None = None

    @classmethod
    def local(cls, folder: Path) -> LakeLocation:
        return cls(uri=str(Path(folder).resolve()))

    @classmethod
    def on_object_store(cls, location: S3Location) -> LakeLocation:
        return cls(uri=location.url, s3=location)

    def with_deadline(self, seconds: float) -> LakeLocation:
        """This location, every call bounded by `seconds` (no retries): what a probe uses."""
        from dataclasses import replace

        return replace(self, deadline_s=seconds)

    @property
    def region(self) -> str | None:
        return self.s3.region if self.s3 else None

    def table_uri(self, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise LakeTableError(f"{name!r} is not a lake table name (lower case letters, digits, _)")
        return f"{self.uri.rstrip('/')}/{name}"

    @cached_property
    def client(self):
        """One S3 client for this location's own log reads (made on first use; None for a folder)."""
        return self.s3.client() if self.s3 is not None else None

    def storage_options(self) -> dict[str, str] | None:
        """delta-rs' object-store options for this location: the region's endpoint and credentials only."""
        if self.s3 is None:
            return None
        options = {
            "AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "AWS_REGION": self.s3.signing_region,
            # Commits are put-if-absent: S3's conditional writes, no external lock service.
            "conditional_put": "etag",
            "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
        }
        # delta-rs' object store retries a failed request for 3 minutes by default: a frozen
        # endpoint (SIGSTOP, a black-holed network) would hold a probe or a run that long.
        if self.deadline_s is not None:
            options |= {
                "timeout": f"{self.deadline_s}s",
                "max_retries": "0",
                "retry_timeout": f"{self.deadline_s}s",
            }
        else:
            options |= {"timeout": f"{READ_TIMEOUT_S * 6}s", "max_retries": "3", "retry_timeout": "60s"}
        if self.s3.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.s3.endpoint_url
            options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
            if self.s3.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        return options

    def table(self, name: str, partition_by: Sequence[str] | None = None) -> LakeTable:
        """Table `name`; its partition columns are DELTA_TABLES' unless given."""
        return LakeTable(self, name, tuple(partition_by or DELTA_TABLES.get(name, ("day",))))


@dataclass(frozen=True)
class Commit:
    table: str
    version: int
    rows: int
    added_files: int
    removed_files: int
    attempts: int
    bytes: int = 0  # of the data files the commit added
    # per partition (its values in partition_by order), from the commit's own add actions;
    # a partition the commit emptied has no entry
    partition_rows: dict[tuple[str, ...], int] = dataclasses.field(default_factory=dict)
    partition_bytes: dict[tuple[str, ...], int] = dataclasses.field(default_factory=dict)


def _partition_value(column: str, value: object) -> str:
    text = value.isoformat() if isinstance(value, date) else str(value)
    if not _PARTITION_VALUE.match(text):
        raise LakeTableError(f"partition {column}={text!r}: not a plain value (letters, digits, _ . : -)")
    return text


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """The frame as Delta stores it: timestamps in microseconds (Delta's precision)."""
    casts = {
        name: pl.Datetime("us", dtype.time_zone)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns"
    }
    return (frame.with_columns(pl.col(n).cast(t) for n, t in casts.items()) if casts else frame).to_arrow()


def _plain(kind: pa.DataType) -> str:
    """A type's name with Arrow's 64-bit-offset variants (polars' strings) named as the plain ones."""
    return (
        str(kind)
        .replace("large_string", "string")
        .replace("large_binary", "binary")
        .replace("large_list", "list")
    )


class LakeTable:
    """One Delta table of a region's lake."""

    def __init__(self, location: LakeLocation, name: str, partition_by: tuple[str, ...] = ("day",)):
        self.location = location
        self.name = name
        self.uri = location.table_uri(name)
        self.partition_by = partition_by

    def __repr__(self) -> str:
        return f"LakeTable({self.uri})"

    def _open(self, version: int | None = None):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, version=version, storage_options=self.location.storage_options())
        except TableNotFoundError:
            return None
        except Exception as error:  # delta-rs raises OSError/DeltaError for a bad version or store
            raise LakeTableError(
                f"{self.uri}: cannot open{f' version {version}' if version is not None else ''}: {error}"
            ) from error

    def version(self) -> int | None:
        """The latest committed version, or None when the table has none yet."""
        table = self._open()
        return None if table is None else table.version()

    def replace(self, frame: pl.DataFrame, **partition: object) -> Commit:
        """Replace the partition `partition` (every partition column named) with `frame`, in one commit.

        An empty `frame` removes the partition's rows. Retries a commit that lost a race to
        another writer; raises LakeCommitConflict after COMMIT_ATTEMPTS.
        """
        return self.replace_partitions([(partition, frame)])

    def replace_partitions(self, parts: Sequence[tuple[Mapping[str, object], pl.DataFrame]]) -> Commit:
        """Replace several partitions (each naming every partition column) in one commit: a
        reader sees all of them replaced or none. The commit's rows and bytes per partition
        are read back from its log entry (`Commit.partition_rows`, `partition_bytes`)."""
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError, SchemaMismatchError

        if not parts:
            raise LakeTableError(f"{self.uri}: a replacement names at least one partition")
        frames, clauses, seen = [], [], set()
        for partition, frame in parts:
            if set(partition) != set(self.partition_by):
                raise LakeTableError(
                    f"{self.uri}: a replacement names every partition column {list(self.partition_by)}, got {sorted(partition)}"
                )
            values = {column: _partition_value(column, partition[column]) for column in self.partition_by}
            key = tuple(values.values())
            if key in seen:
                raise LakeTableError(f"{self.uri}: partition {values} named twice in one replacement")
            seen.add(key)
            clashing = [c for c in self.partition_by if c in frame.columns]
            if clashing:
                raise LakeTableError(f"{self.uri}: the frame carries partition column(s) {clashing} itself")
            frames.append(frame.with_columns(pl.lit(v, pl.String).alias(c) for c, v in values.items()))
            clauses.append("(" + " AND ".join(f"{c} = '{v}'" for c, v in values.items()) + ")")
        # An empty frame only names a partition to empty; the rows come from the others.
        rows = [f for f in frames if f.height] or frames[:1]
        try:
            data = _arrow(pl.concat(rows, how="vertical") if len(rows) > 1 else rows[0])
        except pl.exceptions.PolarsError as error:
            raise LakeTableError(
                f"{self.uri}: the partitions' frames differ in their columns: {error}"
            ) from error
        current = self._open()  # opened once: checked against, then written to (a retry reopens)
        data = self._conform(data, current)
        predicate = " OR ".join(clauses) if len(clauses) > 1 else clauses[0][1:-1]
        options = self.location.storage_options()
        write_id = uuid.uuid4().hex  # finds this write's own commit in the history afterwards
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                write_deltalake(
                    current if current is not None and attempt == 1 else self.uri,
                    data,
                    mode="overwrite",
                    partition_by=list(self.partition_by),
                    predicate=predicate,
                    storage_options=options,
                    commit_properties=CommitProperties(custom_metadata={WRITE_ID: write_id}),
                    # (set when the table is created; later writes keep the table's own)
                    configuration=TABLE_PROPERTIES if current is None else None,
                )
                break
            except CommitFailedError as error:
                if attempt == COMMIT_ATTEMPTS:
                    raise LakeCommitConflict(
                        f"{self.uri}: {attempt} commits of {predicate} lost to concurrent writers; "
                        f"nothing of this write is visible: {error}"
                    ) from error
                time.sleep(random.uniform(0.01, 0.05) * attempt)
            except SchemaMismatchError as error:
                raise LakeTableError(
                    f"{self.uri}: the frame's schema does not match the table's ({error}); "
                    f"columns given: {dict(frame.schema)}"
                ) from error
        return self._commit_of(write_id, attempt)

    def _conform(self, data: pa.Table, current) -> pa.Table:
        """`data` with the table's schema, or LakeTableError naming every difference.

        A column of nulls only (Arrow type `null`, as polars types `None`) takes the table's
        type: it holds nothing a cast could change. Anything else must already match: delta-rs
        would cast (a string column of numbers into a float column) where the lake's schema
        is a contract."""
        if current is None:
            return data
        table_schema = pa.schema(current.schema().to_arrow())
        have = {field.name: field.type for field in table_schema}
        for index, field in enumerate(data.schema):
            if pa.types.is_null(field.type) and field.name in have:
                data = data.set_column(index, field.name, data.column(index).cast(have[field.name]))
        want = {field.name: _plain(field.type) for field in data.schema}
        plain = {name: _plain(kind) for name, kind in have.items()}
        problems = [f"{n}: missing" for n in plain if n not in want]
        problems += [f"{n}: not in the table" for n in want if n not in plain]
        problems += [
            f"{n}: {want[n]} where the table has {plain[n]}"
            for n in want
            if n in plain and want[n] != plain[n]
        ]
        if problems:
            raise LakeTableError(
                f"{self.uri}: the frame does not match the table's schema: {'; '.join(problems)}"
            )
        return data.select(list(have))  # in the table's column order

    def _commit_of(self, write_id: str, attempts: int) -> Commit:
        """The commit this write made, found by its id among the log's newest entries (other
        writers may have committed after it already). Read from the log itself: delta-rs'
        `history()` numbers an older snapshot's entries from the latest version."""
        for version in sorted(self._log_versions(), reverse=True)[:64]:
            actions = [orjson.loads(line) for line in self._log_entry(version).splitlines() if line.strip()]
            for action in actions:
                info = action.get("commitInfo")
                if info is not None and info.get(WRITE_ID) == write_id:
                    metrics = info.get("operationMetrics") or {}
                    rows_of: dict[tuple[str, ...], int] = {}
                    bytes_of: dict[tuple[str, ...], int] = {}
                    for add in (a["add"] for a in actions if "add" in a):
                        key = tuple(str(add["partitionValues"].get(c)) for c in self.partition_by)
                        stats = orjson.loads(add["stats"]) if add.get("stats") else {}
                        rows_of[key] = rows_of.get(key, 0) + int(stats.get("numRecords", 0))
                        bytes_of[key] = bytes_of.get(key, 0) + int(add.get("size", 0))
                    return Commit(
                        partition_rows=rows_of,
                        partition_bytes=bytes_of,
                        bytes=sum(int(a["add"].get("size", 0)) for a in actions if "add" in a),
                        table=self.name,
                        version=version,
                        rows=int(metrics.get("num_added_rows", 0)),
                        added_files=int(metrics.get("num_added_files", 0)),
                        removed_files=int(metrics.get("num_removed_files", 0)),
                        attempts=attempts,
                    )
        raise LakeTableError(f"{self.uri}: write {write_id} committed but is not among the last 64 versions")

    def _log_versions(self) -> list[int]:
        if self.location.s3 is None:
            folder = Path(self.uri) / "_delta_log"
            names = [p.name for p in folder.glob("*.json")] if folder.is_dir() else []
        else:
            from meridian.object_store import list_objects

            s3 = self.location.s3
            names = [
                o.key.rsplit("/", 1)[-1]
                for o in list_objects(s3, self.location.client, f"{self.name}/_delta_log/")
            ]
        return [int(n[:20]) for n in names if len(n) == 25 and n.endswith(".json") and n[:20].isdigit()]

    def _log_entry(self, version: int) -> bytes:
        name = f"_delta_log/{version:020d}.json"
        if self.location.s3 is None:
            return (Path(self.uri) / name).read_bytes()
        s3 = self.location.s3
        reply = self.location.client.get_object(Bucket=s3.bucket, Key=s3.key(f"{self.name}/{name}"))
        return reply["Body"].read()

    def changed_partitions(self, since: int, until: int) -> list[dict[str, str]] | None:
        """The partitions the commits after `since` up to `until` added or removed files in, or
        None when that cannot be told from the log (an entry cleaned up, a schema change):
        then a reader that follows the table incrementally reads it whole."""
        found: dict[tuple, dict[str, str]] = {}
        present = set(self._log_versions())
        for version in range(since + 1, until + 1):
            if version not in present:
                return None
            for line in self._log_entry(version).splitlines():
                action = orjson.loads(line) if line.strip() else {}
                if "metaData" in action:
                    return None
                for kind in ("add", "remove"):
                    if kind in action:
                        values = action[kind].get("partitionValues") or {}
                        found[tuple(values.get(c) for c in self.partition_by)] = {
                            c: values.get(c) for c in self.partition_by
                        }
        return [found[key] for key in sorted(found, key=lambda k: tuple(v or "" for v in k))]

    def dataset(self, version: int | None = None) -> pyarrow.dataset.Dataset | None:
        """The table (at `version`) as an Arrow dataset, or None when it does not exist yet."""
        table = self._open(version)
        return None if table is None else table.to_pyarrow_dataset()

    def read(
        self,
        version: int | None = None,
        where: Mapping[str, object | Sequence[object]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame | None:
        """Rows of the table (at `version`), filtered on partition columns: `{"day": [d1, d2]}`."""
        dataset = self.dataset(version)
        if dataset is None:
            return None
        expression = None
        for column, wanted in (where or {}).items():
            if column not in self.partition_by:
                raise LakeTableError(
                    f"{self.name}: {column!r} is not a partition column ({', '.join(self.partition_by)})"
                )
            values = (
                [wanted] if isinstance(wanted, str | date) or not isinstance(wanted, Sequence) else wanted
            )
            # Typed as the column, so an empty list is a filter matching nothing, not Arrow's
            # null-typed array that no string column can be compared with.
            typed = pa.array(
                [_partition_value(column, v) for v in values], type=dataset.schema.field(column).type
            )
            term = pc.field(column).isin(typed)
            expression = term if expression is None else expression & term
        return pl.from_arrow(dataset.to_table(columns=list(columns) if columns else None, filter=expression))

    def partitions(self, version: int | None = None) -> list[dict[str, str]]:
        """The partitions holding data (at `version`)."""
        table = self._open(version)
        if table is None:
            return []
        return sorted(table.partitions(), key=lambda p: tuple(p.get(c) or "" for c in self.partition_by))

    def drop_unreadable_partitions(self) -> list[tuple[dict[str, str], str, str]]:
        """A local table's partitions whose data files of the newest version cannot be read (a
        storage fault truncated one): each removed from the table in one commit, without reading
        it (a delete on partition columns only). The file stays, for inspection, and older
        versions still name it; re-ingesting the day writes the partition again.

        One bad file would otherwise fail every reader of the whole table. Returns
        (partition, file, why) of each partition dropped."""
        from urllib.parse import unquote

        from meridian.lake import verify_readable

        if self.location.s3 is not None:
            return []  # objects are written whole or not at all: a torn object is not a state there
        table = self._open()
        if table is None:
            return []
        found = []
        for uri in table.file_uris():
            path = Path(unquote(uri.removeprefix("file://")))
            problem = verify_readable(path, path.name) if path.is_file() else "the file is missing"
            if problem is None:
                continue
            relative = path.relative_to(Path(self.uri)).parts[:-1]
            partition = dict(part.split("=", 1) for part in relative if "=" in part)
            if set(partition) != set(self.partition_by):
                raise LakeTableError(
                    f"{self.uri}: unreadable file {path} lies outside a partition: {problem}"
                )
            predicate = " AND ".join(
                f"{c} = '{_partition_value(c, partition[c])}'" for c in self.partition_by
            )
            table.delete(predicate)
            found.append((partition, str(path), problem))
        return found
