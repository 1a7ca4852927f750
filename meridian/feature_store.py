"""Offline feature store: feature views declared once, versioned, retrieved point-in-time.

A feature view names a source table (a dbt model in the region's warehouse), its entity
key, the timestamp at which each row's values became true (event timestamp), a created
timestamp that breaks ties between rows with the same event timestamp, the features with
their types and defaults, and a TTL. Its version is a hash of that definition plus the
source model's SQL, so any change to either yields a new version.

Retrieval is point-in-time correct: for every (entity, event time) row it returns, per
view, the values of the row with the latest event timestamp <= the event time, and among
equal event timestamps the latest created timestamp; a value older than the TTL, or an
entity the view has never seen, gets the feature's documented default. It is one DuckDB
`ASOF LEFT JOIN` per view over the view de-duplicated on (entity, event timestamp), not a
range join followed by de-duplication.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from meridian.paths import REPO_ROOT

DBT_MODELS = REPO_ROOT / "dbt_project" / "models"


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # DuckDB type of the served value
    default: float | int | bool | None = None  # served when the view has no live value


@dataclass(frozen=True)
class FeatureView:
    name: str
    source: str  # table (dbt model) in the region's warehouse
    entity_key: str
    event_timestamp: str  # SQL expression over the source giving the feature time
    created_timestamp: str  # SQL expression breaking ties between equal feature times
    features: tuple[Feature, ...]
    ttl: timedelta
    source_sql: str = ""  # the source's definition, hashed into the version

    def definition(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "entity_key": self.entity_key,
            "event_timestamp": self.event_timestamp,
            "created_timestamp": self.created_timestamp,
            "features": [[f.name, f.dtype, f.default] for f in self.features],
            "ttl_seconds": int(self.ttl.total_seconds()),
            "source_sql_sha256": hashlib.sha256(self.source_sql.encode()).hexdigest(),
        }

    @property
    def version(self) -> str:
        payload = json.dumps(self.definition(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def column(self, feature: str) -> str:
        """Name of a feature in a retrieved dataset: `<view>__<feature>`."""
        return f"{self.name}__{feature}"


def dbt_model_sql(model: str) -> str:
    """The SQL file of a dbt model, the part of a view's definition that lives in dbt."""
    matches = sorted(DBT_MODELS.rglob(f"{model}.sql"))
    if len(matches) != 1:
        raise FileNotFoundError(
            f"expected one dbt model named {model!r} under {DBT_MODELS}, found {len(matches)}"
        )
    return matches[0].read_text()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return repr(value)


def feature_tie_break(view: FeatureView) -> str:
    """ORDER BY terms that make the choice among fully tied rows deterministic."""
    return ", ".join(f"{_quote(f.name)} desc nulls last" for f in view.features)


def point_in_time_sql(
    entity_sql: str,
    event_time: str,
    views: tuple[FeatureView, ...],
    event_time_range: tuple[datetime, datetime] | None = None,
) -> str:
    """SQL that adds every view's point-in-time values to the rows of `entity_sql`.

    `entity_sql` is any query with the views' entity keys and the `event_time` column;
    its rows come back once each, with their columns, in no particular order.

    `event_time_range` (earliest, latest), when every entity row's event time is known to
    lie in it (one day of transactions to score, say), restricts each view to the rows
    that can be served: feature times in [earliest − TTL, latest]. Older rows are past
    their TTL for every entity row and newer ones are in their future, so the result is
    the same (tested); the view is scanned for a few days instead of its whole history.
    """
    ctes = [f"__entities as ({entity_sql})"]
    selects = ["__e.*"]
    joins = []
    for i, view in enumerate(views):
        alias = f"__v{i}"
        feats = ", ".join(f"{_quote(f.name)}" for f in view.features)
        # Rows equal on entity, event and created time (two transactions of one customer in
        # the same microsecond): pick by the feature values, so that every run picks the same.
        tie_break = feature_tie_break(view)
        bound = ""
        if event_time_range is not None:
            earliest, latest = event_time_range[0] - view.ttl, event_time_range[1]
            bound = (
                f"  where {view.event_timestamp} >= timestamp '{earliest.isoformat(sep=' ')}'"
                f" and {view.event_timestamp} <= timestamp '{latest.isoformat(sep=' ')}'\n"
            )
        ctes.append(
            f"{alias} as (\n"
            f"  select {_quote(view.entity_key)} as __key, {view.event_timestamp} as __ts, {feats}\n"
            f"  from {view.source}\n"
            f"{bound}"
            f"  qualify row_number() over (\n"
            f"    partition by {_quote(view.entity_key)}, {view.event_timestamp}\n"
            f"    order by {view.created_timestamp} desc, {tie_break}) = 1\n"
            f")"
        )
        joins.append(
            f"asof left join {alias} on __e.{_quote(view.entity_key)} = {alias}.__key "
            f"and __e.{_quote(event_time)} >= {alias}.__ts"
        )
        live = f"{alias}.__ts >= __e.{_quote(event_time)} - to_microseconds({int(view.ttl.total_seconds() * 1e6)})"
        for f in view.features:
            selects.append(
                f"case when {live} then cast({alias}.{_quote(f.name)} as {f.dtype}) "
                f"else cast({_literal(f.default)} as {f.dtype}) end as {_quote(view.column(f.name))}"
            )
        selects.append(f"case when {live} then {alias}.__ts end as {_quote(view.column('feature_time'))}")
    return (
        "with "
        + ",\n".join(ctes)
        + "\nselect "
        + ",\n  ".join(selects)
        + "\nfrom __entities as __e\n"
        + "\n".join(joins)
    )


def retrieve(
    con: duckdb.DuckDBPyConnection,
    entity_sql: str,
    event_time: str,
    views: tuple[FeatureView, ...],
    event_time_range: tuple[datetime, datetime] | None = None,
) -> duckdb.DuckDBPyRelation:
    """Point-in-time feature retrieval as a lazy DuckDB relation."""
    return con.sql(point_in_time_sql(entity_sql, event_time, views, event_time_range))
