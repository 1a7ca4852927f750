"""Classification, residency enforcement and pseudonymisation.

One policy file (platform/policies/governance.yaml) classifies every column as
personal, pseudonymous, aggregate or public. Every path that moves bytes between
regions (replication, sharing) calls `check_transfer` first; a violation raises
`ResidencyViolation` before anything is written. The audit that proves it held is
meridian.residency.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

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
    if topology.zone_of(source_region) == topology.zone_of(target_region):
        return  # nothing is read for a transfer inside the zone
    check_columns_transfer(
        topology, policy, source_region, target_region, {p.name: file_columns(p) for p in files}, what
    )


def check_columns_transfer(
    topology: Topology,
    policy: Policy,
    source_region: str,
    target_region: str,
    columns_of: dict[str, list[str] | None],
    what: str,
) -> None:
    """check_transfer's rule on named items (files, tables) given by their columns; None for
    an item whose columns cannot be read, which does not cross zones."""
    source_zone = topology.zone_of(source_region)
    target_zone = topology.zone_of(target_region)
    if source_zone == target_zone:
        return
    problems = []
    for name, columns in columns_of.items():
        if columns is None:
            problems.append(f"{name}: content cannot be classified")
            continue
        bound = policy.zone_bound(columns)
        if bound:
            problems.append(f"{name}: {', '.join(bound)}")
    if problems:
        raise ResidencyViolation(
            f"{what}: {source_region} (zone {source_zone}) -> {target_region} (zone {target_zone}) refused; "
            f"zone-bound data would leave zone {source_zone}: " + "; ".join(problems[:10])
        )


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
