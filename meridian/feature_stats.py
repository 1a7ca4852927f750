"""Profile of a feature view over a window of days, read from the region's warehouse."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from meridian.feature_store import FeatureView


def view_profile(con: duckdb.DuckDBPyConnection, view: FeatureView, days: Sequence[str]) -> dict[str, object]:
    """Rows, entities, feature-time range and null share of every feature, for the given days."""
    nulls = ", ".join(f'avg(("{f.name}" is null)::int) as "{f.name}"' for f in view.features)
    query = (
        f"select count(*), count(distinct {view.entity_key}), min({view.event_timestamp}), "
        f"max({view.event_timestamp}), {nulls} from {view.source} "
        f"where cast({view.event_timestamp} as date) between ? and ?"
    )
    row = con.execute(query, [days[0], days[-1]]).fetchall()[0]
    rows, entities, first, last, *null_shares = row
    return {
        "rows": rows,
        "entities": entities,
        "first_feature_time": str(first) if first is not None else None,
        "last_feature_time": str(last) if last is not None else None,
        "null_share": {
            f.name: round(float(v or 0.0), 6) for f, v in zip(view.features, null_shares, strict=True)
        },
    }
