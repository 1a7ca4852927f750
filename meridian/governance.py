"""Classification, residency enforcement, pseudonymisation and the residency audit.

One policy file (platform/policies/governance.yaml) classifies every column as
personal, pseudonymous, aggregate or public. Every path that moves bytes between
regions (replication, sharing) calls `check_transfer` first; a violation raises
`ResidencyViolation` before anything is written. `residency_audit` scans every file
under the data root, every row, and proves that no personal or pseudonymous data of zone
Z exists outside Z — by column name, and by value: every value a zone holds in the
columns the policy classifies as personal or pseudonymous is looked for in every text
value (tokenised) of every file outside that zone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import yaml

from meridian.topology import Topology

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "platform" / "policies" / "governance.yaml"
CLASSES = ("personal", "pseudonymous", "aggregate", "public")
ZONE_BOUND = frozenset({"personal", "pseudonymous"})  # never leave their zone as they are
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


class ResidencyViolation(PermissionError):
    """A transfer would move personal or pseudonymous data out of its residency zone."""


class UnclassifiedColumn(ValueError):
    """A column has no class in the policy; unclassified data is not allowed to move."""


@dataclass(frozen=True)
class TablePolicy:
    owner: str
    retention_days: int
    replication: str
    store: str
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    columns: dict[str, str]
    patterns: tuple[tuple[re.Pattern[str], str], ...]
    tables: dict[str, TablePolicy]
    assets: dict[str, str]
    min_group_size: int
    key_env_prefix: str
    source: str = "<memory>"

    def classify(self, column: str) -> str:
        found = self.columns.get(column)
        if found:
            return found
        for pattern, cls in self.patterns:
            if pattern.match(column):
                return cls
        raise UnclassifiedColumn(
            f"column {column!r} has no class in {self.source}: add it under `columns` "
            f"(one of {', '.join(CLASSES)})"
        )

    def classify_all(self, columns: Iterable[str]) -> dict[str, str]:
        return {c: self.classify(c) for c in columns}

    LEVELS = ("public", "aggregate", "pseudonymous", "personal")

    def level(self, columns: Iterable[str]) -> str:
        """The most sensitive class among `columns` ('unclassified' if any has no class)."""
        try:
            classes = [self.classify(c) for c in columns]
        except UnclassifiedColumn:
            return "unclassified"
        return max(classes, key=self.LEVELS.index, default="public")

    def asset_classification(self, asset: str) -> tuple[str, dict[str, str]] | None:
        """(level, column -> class) of the table an asset writes, or None for non-data assets."""
        table = self.assets.get(asset)
        if table is None:
            return None
        columns = self.tables[table].columns
        return self.level(columns), {c: self.classify(c) for c in columns}

    def zone_bound(self, columns: Iterable[str], strict: bool = True) -> list[str]:
        """Columns that must stay in their zone; an unclassified column counts as one when `strict`.

        Data files are checked strictly. Operational logs (JSONL, SQLite payloads: alerts,
        run metadata) have free-form keys; there only classified zone-bound names count,
        and their values are scanned for customer ids and e-mail addresses instead.
        """
        bound = []
        for column in columns:
            try:
                cls = self.classify(column)
            except UnclassifiedColumn:
                cls = "personal" if strict else "public"
            if cls in ZONE_BOUND:
                bound.append(column)
        return bound


def load_policy(path: str | Path | None = None) -> Policy:
    path = Path(path) if path else DEFAULT_POLICY_PATH
    raw = yaml.safe_load(path.read_text())
    bad = {c: k for c, k in raw["columns"].items() if k not in CLASSES}
    bad |= {p["pattern"]: p["class"] for p in raw.get("pattern_columns", []) if p["class"] not in CLASSES}
    if bad:
        raise ValueError(f"{path}: unknown classes {bad}; use one of {CLASSES}")
    return Policy(
        columns=dict(raw["columns"]),
        patterns=tuple((re.compile(p["pattern"]), p["class"]) for p in raw.get("pattern_columns", [])),
        tables={
            name: TablePolicy(**{**spec, "columns": tuple(spec.get("columns", ()))})
            for name, spec in raw["tables"].items()
        },
        assets=dict(raw.get("assets", {})),
        min_group_size=int(raw["sharing"]["min_group_size"]),
        key_env_prefix=raw["sharing"]["key_env_prefix"],
        source=str(path),
    )


@cache
def default_policy() -> Policy:
    return load_policy()


# ---------------------------------------------------------------- transfers


def file_columns(path: Path) -> list[str] | None:
    """The column names a file holds, or None when the format carries no schema we read."""
    name = path.name
    if name.endswith(".parquet"):
        return list(pq.read_schema(path).names)
    if name.endswith(".jsonl"):
        keys: set[str] = set()
        with open(path, "rb") as handle:
            for _, line in zip(range(1000), handle, strict=False):
                try:
                    keys |= _json_keys(json.loads(line))
                except ValueError:
                    continue
        return sorted(keys)
    if name.endswith(".json"):
        try:
            return sorted(_json_keys(json.loads(path.read_bytes())))
        except ValueError:
            return None
    return None


def _json_keys(value: object) -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            keys.add(str(key))
            keys |= _json_keys(inner)
    elif isinstance(value, list):
        for inner in value[:50]:
            keys |= _json_keys(inner)
    return keys


def check_transfer(
    topology: Topology,
    policy: Policy,
    source_region: str,
    target_region: str,
    files: Sequence[Path],
    what: str,
) -> None:
    """Refuse (before any byte moves) a transfer that takes zone-bound data out of its zone.

    Within one zone everything may move (that is what DR replicas are for). Across
    zones, every file must have a readable schema whose columns are all aggregate or
    public; a file whose content cannot be classified does not cross.
    """
    source_zone = topology.zone_of(source_region)
    target_zone = topology.zone_of(target_region)
    if source_zone == target_zone:
        return
    problems = []
    for path in files:
        columns = file_columns(path)
        if columns is None:
            problems.append(f"{path.name}: content cannot be classified")
            continue
        bound = policy.zone_bound(columns)
        if bound:
            problems.append(f"{path.name}: {', '.join(bound)}")
    if problems:
        raise ResidencyViolation(
            f"{what}: {source_region} (zone {source_zone}) -> {target_region} (zone {target_zone}) refused; "
            f"zone-bound data would leave zone {source_zone}: " + "; ".join(problems[:10])
        )


# ---------------------------------------------------------------- pseudonymisation


def zone_key(topology: Topology, policy: Policy, zone: str, home: Path) -> bytes:
    """The zone's pseudonymisation key: from the environment, else created inside the zone."""
    from_env = os.environ.get(f"{policy.key_env_prefix}{zone.upper()}")
    if from_env:
        return from_env.encode()
    from meridian.paths import region_paths

    first = next(r for r in topology.regions if r.zone == zone)
    path = region_paths(first, home).root / "secrets" / "pseudonym.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's key
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def pseudonymise(values: pl.Series, key: bytes) -> pl.Series:
    """Keyed BLAKE2b (HMAC-style): stable within a zone, unlinkable without the zone's key."""
    return values.map_elements(
        lambda v: hmac.new(key, v.encode(), hashlib.blake2b).hexdigest()[:32] if v is not None else None,
        return_dtype=pl.String,
    )


def share(frame: pl.DataFrame, policy: Policy, key: bytes) -> pl.DataFrame:
    """The cross-zone view of a frame: personal columns refused, pseudonymous ones hashed."""
    classes = policy.classify_all(frame.columns)
    personal = [c for c, k in classes.items() if k == "personal"]
    if personal:
        raise ResidencyViolation(f"personal columns cannot be shared across zones: {', '.join(personal)}")
    return frame.with_columns(
        pseudonymise(frame[c], key).alias(c) for c, k in classes.items() if k == "pseudonymous"
    )


# ---------------------------------------------------------------- audit


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


def _tokens(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Every distinct (column, token) of the text columns, in one pass over the table: a value
    without separators is its own token (ids, e-mails: no regex needed), free text is split."""
    if not columns or frame.is_empty():
        return pl.DataFrame(schema={"column": pl.String, "token": pl.String})
    # Positional names inside: a table's own column may be called "column" or "token".
    names = {f"c{i}": c for i, c in enumerate(columns)}
    long = (
        frame.select(pl.col(c).cast(pl.String, strict=False).alias(f"c{i}") for i, c in enumerate(columns))
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
    where personal data enters a region): what must never be found outside the zone. Copies
    elsewhere (scratch files, exports) do not make a value a zone's own."""
    from concurrent.futures import ThreadPoolExecutor

    from meridian.paths import region_paths

    lake_tables = {
        name: bound
        for name, table in policy.tables.items()
        if table.store == "lake" and (bound := _zone_bound_columns(policy, table.columns))
    }
    sources = [
        (region.zone, path, bound)
        for region in topology.regions
        for name, bound in lake_tables.items()
        for path in sorted(region_paths(region, home).table(name).glob("day=*/*.parquet"))
        if not path.name.startswith(".")
    ]

    def tokens_of(source: tuple[str, Path, list[str]]) -> pl.Series | None:
        _, path, bound = source
        try:
            present = [c for c in pq.read_schema(path).names if c in bound]
            return _tokens(pl.read_parquet(path, columns=present), present)["token"]
        except (OSError, pl.exceptions.PolarsError, ValueError):
            return None  # unreadable inside its zone: it cannot be found outside it either

    found: dict[str, list[pl.Series]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # polars releases the GIL
        for (zone, _, _), tokens in zip(sources, pool.map(tokens_of, sources), strict=True):
            if tokens is not None:
                found.setdefault(zone, []).append(tokens)
    return {zone: np.unique(_hashes(pl.concat(parts))) for zone, parts in found.items() if parts}


def _hashes(values: pl.Series) -> np.ndarray:
    """64-bit hashes of string values (polars' hash, fixed seeds: the same in every call)."""
    return values.hash(seed=0).to_numpy()


def _member_mask(values: pl.Series, sorted_hashes: np.ndarray) -> np.ndarray:
    """Which `values` have their hash in `sorted_hashes` (a sorted uint64 array), by binary
    search: a zone's millions of values are hashed once, and each table's distinct tokens are
    looked up in O(n log m). (A 64-bit collision would report a leak that is not one, never
    miss one.)"""
    if values.is_empty() or sorted_hashes.size == 0:
        return np.zeros(values.len(), dtype=bool)
    h = _hashes(values)
    at = np.minimum(np.searchsorted(sorted_hashes, h), sorted_hashes.size - 1)
    return sorted_hashes[at] == h


def _content_problems(
    table: _Table, zone: str | None, personal: dict[str, np.ndarray], foreign: np.ndarray
) -> list[str]:
    tokens = _tokens(table.frame, _text_columns(table.frame))
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
    personal: dict[str, np.ndarray],
    foreign: np.ndarray,
) -> tuple[list[str], bool, bool]:
    """(problems, holds zone-bound columns, unreadable) of one file."""
    problems: list[str] = []
    bound_any = False
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
    report: AuditReport, home: Path, path: Path, zone: str | None, problems: list[str], bound: bool
) -> None:
    report.files_scanned += 1
    report.bytes_scanned += path.stat().st_size
    report.files_with_zone_bound_columns += int(bound)
    key = zone or "global"
    report.by_zone[key] = report.by_zone.get(key, 0) + 1
    for problem in problems:
        report.findings.append(AuditFinding(str(path.relative_to(home)), key, problem))


def residency_audit(topology: Topology, policy: Policy, home: Path) -> AuditReport:
    """Scan every row of every data file under `home` for zone-bound data outside its zone.

    Two passes. First, every value of every column the policy classifies as personal or
    pseudonymous is collected from each zone's own files (`personal_values_by_zone`): the
    zone's customers, e-mails, cards, devices and transactions, whatever they look like.
    Then every text value of every file (tokenised, so an id inside a JSON blob or a log
    message counts too) is checked against the values of the other zones — or of every
    zone, for a file outside all zones — and zone-bound column names outside every zone
    are reported. Files are recognised by suffix or by content (replica objects).
    """
    from concurrent.futures import ThreadPoolExecutor

    report = AuditReport()
    files = [(path, kind, _location_zone(topology, home, path)) for path, kind in _data_files(home)]
    personal = personal_values_by_zone(topology, policy, home)
    every = np.unique(np.concatenate(list(personal.values()))) if personal else np.array([], dtype=np.uint64)
    foreign_by_zone = {zone: np.setdiff1d(every, own, assume_unique=True) for zone, own in personal.items()}
    # A replica object is a byte-for-byte copy of a file in the same zone (content-addressed):
    # the same bytes in the same zone give the same findings, so each is scanned once.
    keys = [(_content_digest(path), zone) for path, _, zone in files]
    first = {}
    for (path, kind, zone), key in zip(files, keys, strict=True):
        first.setdefault(key, (path, kind, zone))

    def scan(item: tuple[Path, str, str | None]) -> tuple[list[str], bool, bool]:
        path, kind, zone = item
        foreign = foreign_by_zone.get(zone, every) if zone is not None else every
        return _scan_file(path, kind, zone, policy, personal, foreign)

    with ThreadPoolExecutor(max_workers=2) as pool:  # polars and NumPy release the GIL
        results = dict(zip(first, pool.map(scan, first.values()), strict=True))
    for (path, _, zone), key in zip(files, keys, strict=True):
        problems, bound, unreadable = results[key]
        report.files_unreadable += int(unreadable)
        _record(report, home, path, zone, problems, bound)
    report.personal_values_indexed = {z: int(v.size) for z, v in personal.items()}
    return report
