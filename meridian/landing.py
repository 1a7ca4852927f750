"""The landing zone: files of transactions and chargebacks that producers deliver to a region.

The file contract (README, "Bringing your own data"):

- a file lands at `<landing zone>/<feed>/<YYYY-MM-DD>/<name>.<format>` (the zone is the region's
  folder `<region root>/landing/`, or a prefix of its bucket: meridian.landing_stores), where `feed` is
  `transactions` or `chargebacks`, the folder is the UTC day its events belong to (the
  partition), `name` is letters, digits, `.`, `_` and `-`, and `format` is `parquet`, `csv`
  or `jsonl` (`ndjson`);
- a producer writes under a hidden name (starting with `.`) and renames it into place:
  hidden files are in flight and never read (an object store's put is whole by itself);
- columns are those of `FEEDS` (required ones must be present; optional ones may be
  absent; other columns are ignored and reported); times are ISO-8601 with `Z` or an
  offset, or a typed timestamp (naive = UTC); amounts are numbers in the named currency;
- a delivered file is immutable: corrections go under a new name. A file whose content
  changes after it was ingested keeps its first version in the lake, and the new content is
  quarantined with that reason.

Every delivered file is processed once: the first time a file is ingested it is copied into
the region's landing archive under its content hash (the ETag an object store gives a
single-part upload) and recorded in the day's manifest; a re-run reads the archived copy, so a
partition rebuilt later gives the same rows, and a file re-delivered identically is a no-op.
Nothing is dropped: an unreadable file becomes one quarantine row with the reason, and so does
a file in the day's folder that breaks the naming contract (its name, its format, a link), a
file missing required columns has every row quarantined, a bad JSON line is a quarantine row.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl

from meridian.lake import temporary_name, write_bytes_atomic
from meridian.landing_read import Feed, UnreadableFile, as_contract_text, read_file
from meridian.landing_stores import LandedFile, LocalLanding, Misplaced, S3Landing, landing_root
from meridian.roots import make_dirs
from meridian.validation import (
    LABEL_COLUMNS,
    PROVENANCE,
    TRANSACTION_COLUMNS,
    TRANSACTION_REQUIRED,
    ValidatedBatch,
    reason_counts,
)

FEEDS = {
    "transactions": Feed("transactions", TRANSACTION_COLUMNS, TRANSACTION_REQUIRED),
    "chargebacks": Feed("chargebacks", LABEL_COLUMNS, ("transaction_id", "chargeback_at")),
}
GENERATOR_FILE = "generator.parquet"  # what the seeded generator delivers for a feed-day
CHANGED_REASON = "file changed after it was ingested"


def state_root(region_root: Path) -> Path:
    """Manifests and the archive of ingested files (outside the landing prefix producers own)."""
    return region_root / "landing-state"


def day_of(key: str) -> str:
    return key.split("/")[1]


# -- the manifest of a feed-day ---------------------------------------------------------------


def manifest_path(state: Path, feed: str, day: str) -> Path:
    return state / feed / f"{day}.json"


def load_manifest(state: Path, feed: str, day: str) -> dict[str, dict]:
    path = manifest_path(state, feed, day)
    if not path.exists():
        return {}
    return orjson.loads(path.read_bytes())["files"]


def save_manifest(state: Path, feed: str, day: str, files: dict[str, dict]) -> None:
    body = {"feed": feed, "day": day, "files": dict(sorted(files.items()))}
    write_bytes_atomic(orjson.dumps(body, option=orjson.OPT_INDENT_2), manifest_path(state, feed, day))


def _archived(state: Path, key: str, tag: str) -> Path:
    """Where the version `tag` (MD5) of the delivered file `key` is archived."""
    return state / "archive" / key.rsplit("/", 1)[0] / f"{tag}{os.path.splitext(key)[1].lower()}"


def archive(landed: LandedFile, state: Path, store: LocalLanding | S3Landing) -> tuple[str, Path]:
    """Copy a landed file into the archive under its content hash; (MD5, archived path).

    The copy is what gets read, so a producer overwriting the file meanwhile cannot make the
    rows ingested differ from the bytes recorded.
    """
    directory = _archived(state, landed.key, "").parent
    make_dirs(directory)
    temporary = temporary_name(directory, "incoming")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(temporary, "wb") as copy:
            for chunk in store.chunks(landed):
                digest.update(chunk)
                copy.write(chunk)
            copy.flush()
            os.fsync(copy.fileno())
        target = _archived(state, landed.key, digest.hexdigest())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return digest.hexdigest(), target


# -- a feed-day's delivery --------------------------------------------------------------------


@dataclass
class FileReport:
    key: str
    etag: str
    # new | ingested before | changed after ingestion | removed from landing | unreadable | not ingested
    status: str
    delivered: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    problem: str | None = None


@dataclass
class DayDelivery:
    """Rows to validate (the feed's columns as text plus PROVENANCE) and rows quarantined before
    validation (the same columns plus `reason`), with a report per file."""

    rows: pl.DataFrame
    quarantined: pl.DataFrame
    files: list[FileReport]
    manifest: dict[str, dict]


def _empty(feed: Feed, with_reason: bool) -> pl.DataFrame:
    schema = dict.fromkeys(feed.columns, pl.String) | {PROVENANCE: pl.String}
    return pl.DataFrame(schema=schema | ({"reason": pl.String} if with_reason else {}))


def _file_rows(frame: pl.DataFrame, feed: Feed, key: str) -> tuple[pl.DataFrame, list[str], list[str]]:
    """(the file's rows in contract form, required columns it lacks, columns it has beyond the feed's)."""
    missing = [c for c in feed.required if c not in frame.columns]
    ignored = sorted(c for c in frame.columns if c not in feed.columns)
    return as_contract_text(frame, feed).with_columns(pl.lit(key).alias(PROVENANCE)), missing, ignored


def _quarantine(frame: pl.DataFrame, reason: str) -> pl.DataFrame:
    return frame.with_columns(pl.lit(reason).alias("reason"))


def _problem_row(feed: Feed, key: str, reason: str) -> pl.DataFrame:
    row = dict.fromkeys(feed.columns) | {PROVENANCE: key, "reason": reason}
    return pl.DataFrame([row], schema=dict.fromkeys([*feed.columns, PROVENANCE, "reason"], pl.String))


def _quarantine_changed(
    feed: Feed, key: str, path: Path, first_tag: str, now_tag: str, parts: list[pl.DataFrame]
) -> FileReport:
    """The content of a file changed under its old name: every row of it quarantined with the
    reason (the first version stays in the lake)."""
    version = f"{key}@{now_tag[:12]}"
    reason = (
        f"file {key}: {CHANGED_REASON} (etag {first_tag[:12]}, now {now_tag[:12]}); "
        "deliver corrections under a new file name"
    )
    report = FileReport(version, now_tag, "changed after ingestion")
    try:
        frame, bad_lines = read_file(path, feed)
    except UnreadableFile:
        parts.append(_problem_row(feed, version, reason))
        report.delivered = 1
        return report
    rows, _missing, report.ignored_columns = _file_rows(frame, feed, version)
    parts.append(_quarantine(rows, reason))
    parts.extend(_problem_row(feed, version, reason) for _ in bad_lines)
    report.delivered = rows.height + len(bad_lines)
    return report


def collect_day(
    region_root: Path, feed_name: str, day: str, store: LocalLanding | S3Landing | None = None
) -> DayDelivery:
    """Everything delivered for one feed-day to `store` (default: the region's local folder):
    new files archived and read, files ingested before read from their archived copy, changed
    files' new content quarantined."""
    feed = FEEDS[feed_name]
    store = store or LocalLanding(landing_root(region_root))
    state = state_root(region_root)
    manifest = load_manifest(state, feed_name, day)
    files, misplaced = store.scan([feed_name], day=day)
    current = {f.key: f for f in files if day_of(f.key) == day}
    accepted_parts: list[pl.DataFrame] = [_empty(feed, False)]
    quarantined_parts: list[pl.DataFrame] = [_empty(feed, True)]
    reports: list[FileReport] = []
    updated = dict(manifest)

    def take(key: str, path: Path, tag: str, status: str) -> None:
        report = FileReport(key, tag, status)
        reports.append(report)
        try:
            frame, bad_lines = read_file(path, feed)
        except UnreadableFile as error:
            report.status, report.problem, report.delivered = "unreadable", str(error), 1
            quarantined_parts.append(_problem_row(feed, key, f"file {key}: {error}"))
            return
        rows, missing, report.ignored_columns = _file_rows(frame, feed, key)
        for reason in bad_lines:
            quarantined_parts.append(_problem_row(feed, key, f"file {key}: {reason}"))
        report.delivered = rows.height + len(bad_lines)
        if missing:
            report.problem = f"missing required column(s) {missing}"
            quarantined_parts.append(_quarantine(rows, f"file {key}: {report.problem}"))
        else:
            accepted_parts.append(rows)

    def seen(landed: LandedFile, tag: str) -> dict:
        return {
            "etag": tag,
            "size": landed.size,
            "mtime_ns": landed.mtime_ns,
            "store_etag": landed.store_etag,
        }

    for key, landed in sorted(current.items()):
        known = manifest.get(key)
        if known is None:
            tag, archived = archive(landed, state, store)
            updated[key] = {
                "etag": tag,
                "archived": archived.relative_to(state).as_posix(),
                "size": landed.size,
                "seen": seen(landed, tag),
            }
            take(key, archived, tag, "new")
            continue
        take(key, state / known["archived"], known["etag"], "ingested before")
        last = known.get("seen") or {"etag": known["etag"], "size": -1, "mtime_ns": -1}
        if store.unchanged(landed, last):  # as last seen: its archived copy stands for it
            now_tag, copy = last["etag"], _archived(state, key, last["etag"])
            updated[key] = {**known, "seen": {**last, "size": landed.size, "mtime_ns": landed.mtime_ns}}
        else:  # judged from an archived copy (kept for inspection), never the live file
            now_tag, copy = archive(landed, state, store)
            updated[key] = {**known, "seen": seen(landed, now_tag)}
        if now_tag != known["etag"]:
            reports.append(_quarantine_changed(feed, key, copy, known["etag"], now_tag, quarantined_parts))
    for key, known in sorted(manifest.items()):
        if key not in current:  # removed by its producer after ingestion: the lake keeps it
            take(key, state / known["archived"], known["etag"], "removed from landing")
    for problem in misplaced:  # in the day's folder but outside the contract (name, format, link)
        report = FileReport(problem.key, "", "not ingested", delivered=1, problem=problem.reason)
        reports.append(report)
        reason = f"file {problem.key}: not ingested: {problem.reason}"
        quarantined_parts.append(_problem_row(feed, problem.key, reason))
    return DayDelivery(
        pl.concat(accepted_parts, how="vertical"),
        pl.concat(quarantined_parts, how="vertical"),
        reports,
        updated,
    )


def last_ingested_day(region_root: Path) -> str | None:
    """The latest day any feed of the region has ingested files for (from the manifests)."""
    state = state_root(region_root)
    days = [p.stem for feed in FEEDS for p in (state / feed).glob("*.json")]
    return max(days, default=None)


def commit_day(region_root: Path, feed: str, day: str, delivery: DayDelivery) -> None:
    """Record the day's files as ingested: called once the lake holds their rows."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    files = {key: {"ingested_at": stamp, **record} for key, record in delivery.manifest.items()}
    save_manifest(state_root(region_root), feed, day, files)


def pending(
    region_root: Path, feeds: Iterable[str] = FEEDS, store: LocalLanding | S3Landing | None = None
) -> tuple[list[LandedFile], list[Misplaced]]:
    """Files of `store` (default: the region's local folder) not ingested as they are now (new,
    or changed since last seen), and misplaced files.

    Cheap enough for a sensor tick: a local file whose size and mtime are as last seen is not
    hashed; an object is compared by the ETag its listing gives.
    """
    store = store or LocalLanding(landing_root(region_root))
    state = state_root(region_root)
    files, misplaced = store.scan(feeds)
    manifests: dict[tuple[str, str], dict[str, dict]] = {}
    out = []
    for landed in files:
        feed, day = landed.key.split("/")[:2]
        if (feed, day) not in manifests:
            manifests[(feed, day)] = load_manifest(state, feed, day)
        seen = manifests[(feed, day)].get(landed.key, {}).get("seen")
        if seen is None or not store.unchanged(landed, seen):
            out.append(landed)
    return out, misplaced


@dataclass(frozen=True)
class DayResult:
    accepted: pl.DataFrame  # typed, without provenance: what the lake's table holds
    quarantined: pl.DataFrame  # the feed's columns as text, `reason` and `source_file`
    files: pl.DataFrame  # one row per delivered file: status, delivered, accepted, quarantined
    accepted_with_source: pl.DataFrame

    @property
    def delivered(self) -> int:
        return int(self.files["delivered"].sum()) if self.files.height else 0

    def reasons(self) -> dict[str, int]:
        return reason_counts(self.quarantined)


def validate_day(
    delivery: DayDelivery, validate: Callable[[pl.DataFrame], ValidatedBatch], feed_name: str
) -> DayResult:
    """Validate a feed-day's readable rows together (duplicates across files are caught) and add
    the rows quarantined before validation; counts per file reconcile with what each delivered."""
    feed = FEEDS[feed_name]
    checked = validate(delivery.rows)
    order = [*feed.columns, "reason", PROVENANCE]
    quarantined = pl.concat(
        [checked.quarantined.select(order), delivery.quarantined.select(order)], how="vertical"
    )
    by_file = lambda frame, name: frame.group_by(PROVENANCE).len(name).rename({PROVENANCE: "key"})  # noqa: E731
    files = pl.DataFrame(
        [
            {
                "key": r.key,
                "status": r.status,
                "etag": r.etag,
                "delivered": r.delivered,
                "problem": r.problem,
                "ignored_columns": ", ".join(r.ignored_columns) or None,
            }
            for r in delivery.files
        ],
        schema={
            "key": pl.String,
            "status": pl.String,
            "etag": pl.String,
            "delivered": pl.Int64,
            "problem": pl.String,
            "ignored_columns": pl.String,
        },
    )
    files = (
        files.join(by_file(checked.accepted, "accepted"), on="key", how="left")
        .join(by_file(quarantined, "quarantined"), on="key", how="left")
        .with_columns(pl.col("accepted", "quarantined").fill_null(0).cast(pl.Int64))
    )
    return DayResult(checked.accepted.drop(PROVENANCE), quarantined, files, checked.accepted)
