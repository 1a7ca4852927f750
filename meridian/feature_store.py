"""Offline feature store: feature views declared once, versioned, retrieved point-in-time.

A feature view names a source table (a dbt model in the region's warehouse), its entity
key, the timestamp at which each row's values became true (event timestamp), a created
timestamp that breaks ties between rows with the same event timestamp, the features with
their types and defaults, a TTL and a warm-up. Its version is a hash of that definition
plus everything in dbt that determines the source's values (the manifest's checksums of
the model and its ancestors, the macros they use, the vars they read), so any change to
either yields a new version.

Retrieval, point-in-time correct, is meridian.retrieval.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path

import duckdb
import yaml

from meridian.paths import REPO_ROOT


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # DuckDB type of the served value
    default: float | int | bool | None = None  # served when the view has no live value


class FeatureViewError(ValueError):
    """A feature view definition that cannot be served as declared."""


@dataclass(frozen=True)
class FeatureView:
    """A feature view.

    `ttl`: how long a row's values stay servable after its feature time; a row older than
    that is served the defaults. It must be positive. (Feast reads a TTL of zero as "no
    expiry"; here zero would serve only rows stamped exactly at the event time, which is
    almost never what the author meant, so it is refused.)

    `warmup`: how much history before a row the row's values need (its longest window or
    lookback). A row whose event time is less than `warmup` after the start of the
    region's history has truncated windows: it is never used for training, drift
    references, performance or A/B evidence, and a decision scored on it says so.
    """

    name: str
    source: str  # table (dbt model) in the region's warehouse
    entity_key: str
    event_timestamp: str  # SQL expression over the source giving the feature time
    created_timestamp: str  # SQL expression breaking ties between equal feature times
    features: tuple[Feature, ...]
    ttl: timedelta
    warmup: timedelta
    source_sql: str = (
        ""  # the source's dbt definition (meridian.feature_store.dbt_definition), hashed into the version
    )
    # The columns of a uniqueness test the source's dbt model carries (meridian_unique_combination)
    # that make it one row per (entity, feature time): the entity key and the column the event
    # timestamp is computed from. Declared, retrieval skips its de-duplication (a window over
    # every row of the view; on 10M rows, half the retrieval: benchmarks/pit_join.py). The
    # rows served are the same, so it is not part of the version. Held to the dbt project by
    # tests/test_feature_store.py; a dbt build whose test fails fails its run (assets/transforms.py).
    unique_key: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise FeatureViewError(
                f"feature view {self.name!r}: ttl must be positive, got {self.ttl}; a zero TTL would serve only "
                "rows stamped exactly at the event time (Feast reads zero as 'no expiry': here, give a long TTL)"
            )
        if self.unique_key and self.entity_key not in self.unique_key:
            raise FeatureViewError(
                f"feature view {self.name!r}: unique_key {list(self.unique_key)} must include the entity key "
                f"{self.entity_key!r}: only a source with one row per entity and feature time skips de-duplication"
            )
        if self.warmup < timedelta(0):
            raise FeatureViewError(f"feature view {self.name!r}: warmup must be >= 0, got {self.warmup}")

    def definition(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "entity_key": self.entity_key,
            "event_timestamp": self.event_timestamp,
            "created_timestamp": self.created_timestamp,
            "features": [[f.name, f.dtype, f.default] for f in self.features],
            "ttl_seconds": int(self.ttl.total_seconds()),
            "warmup_seconds": int(self.warmup.total_seconds()),
            "source_sql_sha256": hashlib.sha256(self.source_sql.encode()).hexdigest(),
        }

    @cached_property
    def version(self) -> str:
        # Cached: the view is frozen, and the serving path reads it on every request.
        payload = json.dumps(self.definition(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def column(self, feature: str) -> str:
        """Name of a feature in a retrieved dataset: `<view>__<feature>`."""
        return f"{self.name}__{feature}"


DBT_PROJECT = REPO_ROOT / "dbt_project"
DBT_MANIFEST = DBT_PROJECT / "target" / "manifest.json"
# A run's own settings (Dagster passes them as MERIDIAN_DBT_* environment variables:
# assets/transforms.py dbt_env; a standalone dbt as --vars): where and when it runs, not
# what a feature means, so they are not part of a view's definition.
RUN_SCOPED_DBT_VARS = frozenset({"region", "min_day", "max_day", "lake_root", "warehouse_path"})


def dbt_run_env(settings: Mapping[str, object]) -> dict[str, str]:
    """Run-scoped dbt settings as the environment dbt reads them from (`run_setting` in
    dbt_project/macros/run_window.sql): MERIDIAN_DBT_<NAME>, empty for None (unset)."""
    unknown = set(settings) - RUN_SCOPED_DBT_VARS
    if unknown:
        raise ValueError(f"not run-scoped dbt settings: {sorted(unknown)}")
    return {f"MERIDIAN_DBT_{k.upper()}": "" if v is None else str(v) for k, v in settings.items()}


_VAR_CALL = re.compile(r"""\bvar\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")


def dbt_sources_newer_than(manifest: Path = DBT_MANIFEST) -> Path | None:
    """A dbt project file changed after the manifest was parsed (the first found), or None."""
    if not manifest.exists():
        return manifest
    parsed = manifest.stat().st_mtime
    candidates = [DBT_PROJECT / "dbt_project.yml"]
    for folder in ("models", "macros", "seeds", "tests"):
        candidates.extend(p for p in (DBT_PROJECT / folder).rglob("*") if p.is_file())
    return next((p for p in candidates if p.stat().st_mtime > parsed), None)


def dbt_project_vars() -> dict[str, object]:
    """The project's vars as dbt_project.yml declares them."""
    return (yaml.safe_load((DBT_PROJECT / "dbt_project.yml").read_text()) or {}).get("vars", {}) or {}


def dbt_definition(
    model: str, manifest: Path = DBT_MANIFEST, project_vars: dict[str, object] | None = None
) -> str:
    """Everything in dbt that determines a model's values, as canonical JSON: the manifest's
    checksums of the model and every ancestor (models, seeds, snapshots, sources), the SQL of
    every macro they use (macros of macros included), and the value of every project var
    that their code or those macros read (run-scoped vars excepted)."""
    if not manifest.exists():
        raise FileNotFoundError(
            f"the dbt manifest {manifest} is missing: run scripts/setup.sh (it parses the dbt project)"
        )
    data = json.loads(manifest.read_text())
    nodes = {**data["nodes"], **data.get("sources", {})}
    matches = [
        uid for uid, n in data["nodes"].items() if n["resource_type"] == "model" and n["name"] == model
    ]
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one dbt model named {model!r} in {manifest}, found {len(matches)}")
    seen_nodes: dict[str, str] = {}
    pending = list(matches)
    while pending:
        uid = pending.pop()
        if uid in seen_nodes or uid not in nodes:
            continue
        node = nodes[uid]
        seen_nodes[uid] = (node.get("checksum") or {}).get("checksum") or hashlib.sha256(
            json.dumps(
                {k: node.get(k) for k in ("relation_name", "columns", "meta")}, sort_keys=True
            ).encode()
        ).hexdigest()
        pending.extend(data["parent_map"].get(uid, []))
    macros = data["macros"]
    seen_macros: dict[str, str] = {}
    pending = [m for uid in seen_nodes for m in nodes[uid].get("depends_on", {}).get("macros", [])]
    while pending:
        uid = pending.pop()
        if uid in seen_macros or uid not in macros:
            continue
        seen_macros[uid] = hashlib.sha256(macros[uid]["macro_sql"].encode()).hexdigest()
        pending.extend(macros[uid].get("depends_on", {}).get("macros", []))
    code = [nodes[uid].get("raw_code", "") for uid in seen_nodes]
    code += [
        macros[uid]["macro_sql"]
        for uid in seen_macros
        if macros[uid]["package_name"] == data["metadata"]["project_name"]
    ]
    project_vars = dbt_project_vars() if project_vars is None else project_vars
    read = sorted({name for text in code for name in _VAR_CALL.findall(text)} - RUN_SCOPED_DBT_VARS)
    return json.dumps(
        {
            "nodes": dict(sorted(seen_nodes.items())),
            "macros": dict(sorted(seen_macros.items())),
            "vars": {name: project_vars.get(name) for name in read},
        },
        sort_keys=True,
    )


def quote_identifier(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return repr(value)


def feature_tie_break(view: FeatureView) -> str:
    """ORDER BY terms that make the choice among fully tied rows deterministic."""
    return ", ".join(f"{quote_identifier(f.name)} desc nulls last" for f in view.features)


# ---------------------------------------------------------------- warm-up


def warmup_of(views: tuple[FeatureView, ...]) -> timedelta:
    """The history a row needs before its event time for every view's windows to be full."""
    return max((view.warmup for view in views), default=timedelta(0))


def history_start(con: duckdb.DuckDBPyConnection, table: str = "stg_transactions") -> date | None:
    """The first day of the region's history: the earliest event day its warehouse holds."""
    return con.sql(f"select min(event_day) from {table}").fetchall()[0][0]


def complete_from(start: date | None, views: tuple[FeatureView, ...]) -> datetime | None:
    """The first event time (naive UTC) whose windows history fully covers; None without history."""
    if start is None:
        return None
    return datetime.combine(start, datetime.min.time()) + warmup_of(views)


FEATURE_HISTORY_FILE = "feature_history.json"


def feature_history_path(region_root: Path) -> Path:
    """Where a region states its history's first day and when feature windows are complete
    (beside the online store, replicated with it), for the scoring service."""
    return region_root / "online" / FEATURE_HISTORY_FILE


def read_complete_from(region_root: Path) -> datetime | None:
    """The region's `complete_from` as its online store's writer last recorded it; None if unknown."""
    try:
        payload = json.loads(feature_history_path(region_root).read_text())
        return datetime.fromisoformat(payload["features_complete_from"])
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None
