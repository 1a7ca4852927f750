"""The residency audit: proves that no personal or pseudonymous data of zone Z exists outside Z.

It scans every file under the data root, every row — by column name, and by value: every
value a zone holds in the columns the policy classifies as personal or pseudonymous is
looked for in every text value (tokenised) of every file outside that zone.

Longer than ~450 lines on purpose: the file readers, the tokeniser and the two passes are
one proof; the tokenising rule must be the same where values are indexed and where they are
looked for, and the wire test (tests/test_residency_on_the_wire.py) reuses the second pass.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from meridian.governance import Policy
from meridian.hash_index import HashIndex
from meridian.topology import Topology


@dataclass
class AuditFinding:
    path: str
    location_zone: str
    problem: str


@dataclass
class AuditReport:
    files_scanned: int = 0
    bytes_scanned: int = 0
    files_with_zone_bound_columns: int = 0
    findings: list[AuditFinding] = field(default_factory=list)
    by_zone: dict[str, int] = field(default_factory=dict)
    personal_values_indexed: dict[str, int] = field(default_factory=dict)
    files_unreadable: int = 0  # inside a zone (outside every zone, an unreadable file is a finding)

    @property
    def passed(self) -> bool:
        return not self.findings


def _location_zone(topology: Topology, home: Path, path: Path) -> str | None:
    """The zone a file lives in: the zone of the region root it is under, else None (global)."""
    from meridian.paths import region_paths

    for region in topology.regions:
        root = region_paths(region, home).root
        if path.is_relative_to(root):
            return region.zone
    return None


# A token of free text that could be an identifier or an address: ids, e-mails, fingerprints.
TOKEN = r"[A-Za-z0-9_@.+\-]{4,}"


_MAGIC = ((0, b"PAR1", "parquet"), (0, b"SQLite format 3\x00", "sqlite"), (8, b"DUCK", "duckdb"))


_SUFFIXES = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".db": "sqlite",
    ".duckdb": "duckdb",
}


def file_kind(path: Path) -> str | None:
    """What a data file is, by its suffix or, for content-addressed objects (replicas), its magic bytes."""
    kind = _SUFFIXES.get(path.suffix)
    if kind is not None or path.suffix:
        return kind
    with open(path, "rb") as handle:
        head = handle.read(16)
    return next((k for offset, magic, k in _MAGIC if head[offset : offset + len(magic)] == magic), None)


@dataclass
class _Table:
    name: str  # "" for a file that is one table
    frame: pl.DataFrame
    strict: bool  # a data table (every column must be classified) or free-form records


def _records_frame(records: list[dict]) -> pl.DataFrame:
    if not records:
        return pl.DataFrame()
    names = list(dict.fromkeys(k for r in records for k in r))
    rows = [[None if r.get(n) is None else str(r.get(n)) for n in names] for r in records]
    return pl.DataFrame(rows, schema={n: pl.String for n in names}, orient="row")


def _flatten_all(value: object, prefix: str = "") -> dict[str, object]:
    """Every scalar of a JSON document, keyed by its field name (nested names kept as they are)."""
    out: dict[str, object] = {}
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, dict | list):
                for k, v in _flatten_all(inner, f"{key}.").items():
                    out.setdefault(k, v)
            else:
                out[str(key)] = inner
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            for k, v in _flatten_all(inner, prefix).items():
                out.setdefault(k if k not in out else f"{k}[{i}]", v)
    return out


def _tables(path: Path, kind: str, columns: Callable[[list[str]], list[str] | None]) -> Iterable[_Table]:
    """Every table of a file, all rows; `columns(names)` picks the columns to read (None: all)."""
    if kind == "parquet":
        names = list(pq.read_schema(path).names)
        yield _Table("", pl.read_parquet(path, columns=columns(names)), True)
    elif kind == "csv":
        yield _Table("", pl.read_csv(path, infer_schema=False), False)
    elif kind in ("jsonl", "json"):
        records = []
        text = path.read_bytes()
        documents = text.splitlines() if kind == "jsonl" else [text]
        if kind == "json":
            try:
                json.loads(text)
            except ValueError:
                documents = text.splitlines()  # JSON lines under .json: a Delta log entry
        for line in documents:
            with contextlib.suppress(ValueError):
                records.append(_flatten_all(json.loads(line)))
        yield _Table("", _records_frame(records), False)
    elif kind == "duckdb":
        import duckdb

        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error:
            return  # held by a writer: audited on the next run
        try:
            tables = con.sql(
                "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
            ).fetchall()
            for schema, table in tables:
                qualified = f'"{schema}"."{table}"'
                names = [r[0] for r in con.sql(f"describe {qualified}").fetchall()]
                picked = columns(names)
                if picked == []:
                    continue
                select = ", ".join(f'"{c}"' for c in picked) if picked is not None else "*"
                yield _Table(f"{schema}.{table}", con.sql(f"select {select} from {qualified}").pl(), True)
        finally:
            con.close()
    elif kind == "sqlite":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
            for table in tables:
                cur = con.execute(f'select * from "{table}"')
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
                frame = pl.DataFrame(
                    [[None if v is None else str(v) for v in row] for row in rows],
                    schema={n: pl.String for n in names},
                    orient="row",
                )
                yield _Table(table, frame, False)
                if "payload" in frame.columns:
                    payloads = []
                    for payload in frame["payload"].drop_nulls():
                        with contextlib.suppress(ValueError):
                            payloads.append(_flatten_all(json.loads(payload)))
                    yield _Table(f"{table}.payload", _records_frame(payloads), False)
        finally:
            con.close()


def _zone_bound_columns(policy: Policy, names: Iterable[str]) -> list[str]:
    return policy.zone_bound(names, strict=False)


_SEPARATOR = r"[^A-Za-z0-9_@.+\-]"


def _text_columns(frame: pl.DataFrame) -> list[str]:
    return [
        c
        for c, t in frame.schema.items()
        if t in (pl.String, pl.Categorical) or isinstance(t, pl.List | pl.Struct)
    ]


def _as_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A text column as it is; a nested one (lists, structs) as its JSON, so the values
    inside are tokenised too (a cast to text fails on nested types: the file was counted
    unreadable and its values were never looked at)."""
    if isinstance(frame.schema[column], pl.List | pl.Struct):
        return pl.struct(pl.col(column)).struct.json_encode()
    return pl.col(column).cast(pl.String, strict=False)


def _tokens(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Every distinct (column, token) of the text columns, in one pass over the table: a value
    without separators is its own token (ids, e-mails: no regex needed), free text is split."""
    if not columns or frame.is_empty():
        return pl.DataFrame(schema={"column": pl.String, "token": pl.String})
    # Positional names inside: a table's own column may be called "column" or "token".
    names = {f"c{i}": c for i, c in enumerate(columns)}
    long = (
        frame.select(_as_text(frame, c).alias(f"c{i}") for i, c in enumerate(columns))
        .unpivot(variable_name="column", value_name="token")
        .drop_nulls()
        .unique()
        .with_columns(pl.col("column").replace_strict(names, return_dtype=pl.String))
    )
    split = pl.col("token").str.contains(_SEPARATOR)
    whole = long.filter(~split & (pl.col("token").str.len_chars() >= 4))
    parts = (
        long.filter(split).with_columns(pl.col("token").str.extract_all(TOKEN)).explode("token").drop_nulls()
    )
    return pl.concat([whole, parts]).unique()


def _all_tokens(frame: pl.DataFrame, columns: list[str]) -> pl.Series:
    """Every token of the text `columns`, as `_tokens` finds them, without the per-column
    bookkeeping (no unpivot, no de-duplication): what a membership test needs."""
    if not columns or frame.is_empty():
        return pl.Series("token", [], dtype=pl.String)
    text = frame.select(_as_text(frame, c).alias(f"c{i}") for i, c in enumerate(columns))
    values = pl.concat(text.get_columns(), how="vertical").drop_nulls()
    split = values.str.contains(_SEPARATOR)
    whole = values.filter(~split & (values.str.len_chars() >= 4))
    parts = values.filter(split).str.extract_all(TOKEN).explode().drop_nulls()
    return pl.concat([whole, parts]).alias("token")


def _any_token(frame: pl.DataFrame, columns: list[str], index: HashIndex) -> bool:
    """Whether any token of the text `columns` is in `index`: the common case of a table that
    holds none costs no more than hashing its values; `_tokens` then names the columns of a
    table that does."""
    if index.size == 0:
        return False
    return bool(index.contains(_hashes(_all_tokens(frame, columns))).any())


def _data_files(home: Path) -> list[tuple[Path, str]]:
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path.name.startswith(".") or "dbt-runs" in path.parts:
            continue
        with contextlib.suppress(OSError):
            kind = file_kind(path)
            if kind is not None:
                found.append((path, kind))
    return found


def personal_values_by_zone(topology: Topology, policy: Policy, home: Path) -> dict[str, np.ndarray]:
    """Every value each zone holds in a column the policy classifies as personal or pseudonymous,
    from every row of its regions' lake tables of record (policy `tables` stored in the lake:
    where personal data enters a region, on its disk or its bucket): what must never be found
    outside the zone. Copies elsewhere (scratch files, exports) do not make a value a zone's own."""
    from meridian.paths import region_paths

    lake_tables = {
        name: bound
        for name, table in policy.tables.items()
        if table.store == "lake" and (bound := _zone_bound_columns(policy, table.columns))
    }
    sources: list[tuple[str, Callable[[], pl.DataFrame | None]]] = []
    for region in topology.regions:
        paths = region_paths(region, home)
        for name, bound in lake_tables.items():
            if paths.lake_url is not None:  # on the region's bucket: the table's current rows
                # (a bucket that does not answer fails the audit: it cannot index that zone)
                table = paths.lake_table(name)
                sources.append((region.zone, lambda t=table, b=bound: _table_columns(t, b)))
                continue
            # every data file of the table: one per day, or a Delta table's (day=*/[origin=*/]part-*)
            for path in sorted(paths.table(name).rglob("day=*/**/*.parquet")):
                if not path.name.startswith("."):
                    sources.append((region.zone, lambda p=path, b=bound: parquet_columns(p, b)))
    return personal_values(sources)


def parquet_columns(path: Path, wanted: list[str]) -> pl.DataFrame:
    """The columns of a Parquet file among `wanted` (those it has)."""
    return pl.read_parquet(path, columns=[c for c in pq.read_schema(path).names if c in wanted])


def _table_columns(table, wanted: list[str]) -> pl.DataFrame | None:
    dataset = table.dataset()
    if dataset is None:
        return None
    return table.read(columns=[c for c in dataset.schema.names if c in wanted])


def personal_values(sources: list[tuple[str, Callable[[], pl.DataFrame | None]]]) -> dict[str, np.ndarray]:
    """The hashed tokens of each zone's personal values: `sources` are (zone, a loader of a
    frame of its zone-bound columns), read two at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def hashes_of(source: tuple[str, Callable[[], pl.DataFrame | None]]) -> np.ndarray | None:
        _, load = source
        try:
            frame = load()
        except (OSError, pl.exceptions.PolarsError, ValueError):
            return None  # unreadable inside its zone: it cannot be found outside it either
        return None if frame is None else np.unique(_hashes(_all_tokens(frame, frame.columns)))

    found: dict[str, list[np.ndarray]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # polars and NumPy release the GIL
        for (zone, _), hashes in zip(sources, pool.map(hashes_of, sources), strict=True):
            if hashes is not None:
                found.setdefault(zone, []).append(hashes)
    return {zone: np.unique(np.concatenate(parts)) for zone, parts in found.items() if parts}


def _hashes(values: pl.Series) -> np.ndarray:
    """64-bit hashes of string values (polars' hash, fixed seeds: the same in every call)."""
    return values.hash(seed=0).to_numpy()


def _member_mask(values: pl.Series, index: HashIndex) -> np.ndarray:
    """Which `values` have their hash in `index`: a zone's millions of values are hashed once,
    and each table's distinct tokens are looked up against them."""
    if values.is_empty() or index.size == 0:
        return np.zeros(values.len(), dtype=bool)
    return index.contains(_hashes(values))


def _content_problems(
    table: _Table, zone: str | None, personal: dict[str, HashIndex], foreign: HashIndex
) -> list[str]:
    columns = _text_columns(table.frame)
    if not _any_token(table.frame, columns, foreign):
        return []
    tokens = _tokens(table.frame, columns)
    hits = tokens.filter(pl.Series(_member_mask(tokens["token"], foreign)))
    problems = []
    for column, found in hits.group_by("column", maintain_order=True):
        zones = sorted(
            z for z, own in personal.items() if z != zone and _member_mask(found["token"], own).any()
        )
        problems.append(
            f"column {column[0]!r} holds {found.height} personal or pseudonymous value(s) of zone(s) {zones}"
        )
    return problems


def _scan_file(
    path: Path,
    kind: str,
    zone: str | None,
    policy: Policy,
    personal: dict[str, HashIndex],
    foreign: HashIndex,
) -> tuple[list[str], bool, bool]:
    """(problems, holds zone-bound columns, unreadable) of one file."""
    problems: list[str] = []
    bound_any = False
    if kind not in _SUFFIXES.values():
        return (
            (
                [f"not a kind of file the audit reads ({kind}): cannot prove it holds no personal data"]
                if zone is None
                else []
            ),
            False,
            True,
        )
    try:
        for table in _tables(path, kind, lambda names: None):
            where = f"table {table.name}: " if table.name else ""
            # Column names are checked in data tables (Parquet, DuckDB); free-form records
            # (JSON, logs, SQLite stores) name columns in metadata, so their values are checked.
            bound = policy.zone_bound(table.frame.columns) if table.strict else []
            bound_any |= bool(bound)
            if bound and zone is None:
                problems.append(f"{where}zone-bound columns {bound} outside every zone")
            problems += [where + p for p in _content_problems(table, zone, personal, foreign)]
    except (OSError, sqlite3.DatabaseError, pl.exceptions.PolarsError, ValueError) as error:
        # Inside its zone an unreadable file is counted (files_unreadable); outside every zone
        # it cannot be cleared, so it is a finding.
        if zone is None:
            return [f"unreadable, cannot prove it holds no personal data: {error}"], bound_any, True
        return [], bound_any, True
    return problems, bound_any, False


def _content_digest(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _record(
    report: AuditReport, name: str, path: Path, zone: str | None, problems: list[str], bound: bool
) -> None:
    report.files_scanned += 1
    report.bytes_scanned += path.stat().st_size
    report.files_with_zone_bound_columns += int(bound)
    key = zone or "global"
    report.by_zone[key] = report.by_zone.get(key, 0) + 1
    for problem in problems:
        report.findings.append(AuditFinding(name, key, problem))


def residency_audit(
    topology: Topology, policy: Policy, home: Path, published: list[tuple[str, Path]] = ()
) -> AuditReport:
    """Scan every row of every data file under `home` for zone-bound data outside its zone.

    Two passes. First, every value of every column the policy classifies as personal or
    pseudonymous is collected from each zone's own files (`personal_values_by_zone`): the
    zone's customers, e-mails, cards, devices and transactions, whatever they look like.
    Then every text value of every file (tokenised, so an id inside a JSON blob or a log
    message counts too) is checked against the values of the other zones — or of every
    zone, for a file outside all zones — and zone-bound column names outside every zone
    are reported. Files are recognised by suffix or by content (replica objects).
    `published`: (name, local copy) of objects stored outside every zone elsewhere than
    under `home` (the platform's bucket, meridian.global_store), audited as such.
    """
    files = [
        (str(path.relative_to(home)), path, kind, _location_zone(topology, home, path))
        for path, kind in _data_files(home)
    ]
    files += [(name, path, file_kind(path) or "unknown", None) for name, path in published]
    return audit_files(policy, files, personal_values_by_zone(topology, policy, home))


def audit_files(
    policy: Policy, files: list[tuple[str, Path, str, str | None]], personal: dict[str, np.ndarray]
) -> AuditReport:
    """The audit's second pass over `files`: (name, path, kind, zone it is stored in, None outside
    every zone), against each zone's `personal` values (personal_values_by_zone)."""
    from concurrent.futures import ThreadPoolExecutor

    report = AuditReport()
    every = np.unique(np.concatenate(list(personal.values()))) if personal else np.array([], dtype=np.uint64)
    foreign_by_zone = {
        zone: HashIndex(np.setdiff1d(every, own, assume_unique=True)) for zone, own in personal.items()
    }
    anywhere = HashIndex(every)
    indexed = {zone: HashIndex(own) for zone, own in personal.items()}
    # A replica object is a byte-for-byte copy of a file in the same zone (content-addressed):
    # the same bytes in the same zone give the same findings, so each is scanned once.
    keys = [(_content_digest(path), zone) for _, path, _, zone in files]
    first = {}
    for (_, path, kind, zone), key in zip(files, keys, strict=True):
        first.setdefault(key, (path, kind, zone))

    def scan(item: tuple[Path, str, str | None]) -> tuple[list[str], bool, bool]:
        path, kind, zone = item
        foreign = foreign_by_zone.get(zone, anywhere) if zone is not None else anywhere
        return _scan_file(path, kind, zone, policy, indexed, foreign)

    with ThreadPoolExecutor(max_workers=2) as pool:  # polars and NumPy release the GIL
        results = dict(zip(first, pool.map(scan, first.values()), strict=True))
    for (name, path, _, zone), key in zip(files, keys, strict=True):
        problems, bound, unreadable = results[key]
        report.files_unreadable += int(unreadable)
        _record(report, name, path, zone, problems, bound)
    report.personal_values_indexed = {z: int(v.size) for z, v in personal.items()}
    return report
