"""Point-in-time retrieval of feature views (meridian.feature_store): for every (entity, event
time) row, per view, the values of the row with the latest feature time <= the event time (among
equal feature times the latest created), or the view's defaults past its TTL or for an entity
it has never seen. One DuckDB `ASOF LEFT JOIN` per view over the view de-duplicated on
(entity, feature time), not a range join followed by de-duplication.

Large retrievals run in entity parts (`retrieve_parts`), so their memory follows a part's rows
rather than the view's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq

from meridian.feature_store import FeatureView, feature_tie_break, quote_identifier, sql_literal


def utc_naive(value: datetime) -> datetime:
    """A datetime as naive UTC: aware values are converted, naive ones are taken as UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def utc_sql(expression: str) -> str:
    """A TIMESTAMP, TIMESTAMPTZ, TIMESTAMP_NS (or DATE cast to timestamp) expression as a naive
    UTC TIMESTAMP, whatever the session's time zone: epoch microseconds do not depend on it."""
    return f"make_timestamp(epoch_us({expression}))"


def _timestamp_literal(value: datetime) -> str:
    return f"timestamp '{utc_naive(value).isoformat(sep=' ')}'"


def _servable_rows(view: FeatureView, event_time_range: tuple[datetime, datetime] | None) -> str | None:
    """The condition on a view's rows that entity rows in `event_time_range` can be served:
    feature times in [earliest - TTL, latest]. None without a range."""
    if event_time_range is None:
        return None
    earliest, latest = utc_naive(event_time_range[0]) - view.ttl, event_time_range[1]
    feature_time = utc_sql(view.event_timestamp)
    return (
        f"{feature_time} >= {_timestamp_literal(earliest)} and {feature_time} <= {_timestamp_literal(latest)}"
    )


def point_in_time_sql(
    entity_sql: str,
    event_time: str,
    views: tuple[FeatureView, ...],
    event_time_range: tuple[datetime, datetime] | None = None,
    part: tuple[int, int] | None = None,
) -> str:
    """SQL that adds every view's point-in-time values to the rows of `entity_sql`.

    `entity_sql` is any query with the views' entity keys and the `event_time` column;
    its rows come back once each, with their columns, in no particular order.

    Time zones: every timestamp (the entity rows' event time, each view's feature time,
    the range bounds) is compared as naive UTC, so TIMESTAMP (read as UTC), TIMESTAMPTZ
    and nanosecond timestamps give the same rows in any DuckDB session time zone, and
    the range may be given as naive-UTC or aware datetimes.

    `event_time_range` (earliest, latest), when every entity row's event time is known to
    lie in it (one day of transactions to score, say), restricts each view to the rows
    that can be served: feature times in [earliest − TTL, latest]. Older rows are past
    their TTL for every entity row and newer ones are in their future, so the result is
    the same (tested); the view is scanned for a few days instead of its whole history.

    `part` (i, n) keeps the rows whose first view's entity key hashes to part i of n, in the
    entity rows and in every view keyed on it (`retrieval_parts`): the n parts together are
    the whole result, each row in exactly one.
    """
    owns = ""
    if part is not None:
        key = quote_identifier(views[0].entity_key)
        owns = f"hash({key}) % {part[1]} = {part[0]}"
    ctes = [
        f"__entities as (select *, {utc_sql(quote_identifier(event_time))} as __event_utc from ({entity_sql})"
        + (f" where {owns}" if owns else "")
        + ")"
    ]
    selects = ["__e.* exclude (__event_utc)"]
    joins = []
    for i, view in enumerate(views):
        alias = f"__v{i}"
        feats = ", ".join(f"{quote_identifier(f.name)}" for f in view.features)
        # Rows equal on entity, event and created time (two transactions of one customer in
        # the same microsecond): pick by the feature values, so that every run picks the same.
        tie_break = feature_tie_break(view)
        feature_time = utc_sql(view.event_timestamp)
        conditions = [servable] if (servable := _servable_rows(view, event_time_range)) else []
        if owns and view.entity_key == views[0].entity_key:
            conditions.append(owns)
        bound = f"  where {' and '.join(conditions)}\n" if conditions else ""
        dedup = (
            ""
            if view.unique_key
            else (
                f"  qualify row_number() over (\n"
                f"    partition by {quote_identifier(view.entity_key)}, {feature_time}\n"
                f"    order by {view.created_timestamp} desc, {tie_break}) = 1\n"
            )
        )
        ctes.append(
            f"{alias} as (\n"
            f"  select {quote_identifier(view.entity_key)} as __key, {feature_time} as __ts, {feats}\n"
            f"  from {view.source}\n"
            f"{bound}"
            f"{dedup}"
            f")"
        )
        joins.append(
            f"asof left join {alias} on __e.{quote_identifier(view.entity_key)} = {alias}.__key "
            f"and __e.__event_utc >= {alias}.__ts"
        )
        live = f"{alias}.__ts >= __e.__event_utc - to_microseconds({int(view.ttl.total_seconds() * 1e6)})"
        for f in view.features:
            selects.append(
                f"case when {live} then cast({alias}.{quote_identifier(f.name)} as {f.dtype}) "
                f"else cast({sql_literal(f.default)} as {f.dtype}) end as {quote_identifier(view.column(f.name))}"
            )
        selects.append(
            f"case when {live} then {alias}.__ts end as {quote_identifier(view.column('feature_time'))}"
        )
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


# Feature rows one part of a retrieval joins at most: an ASOF join holds both sides sorted, so
# a part's memory follows its rows. On 1M labels x 10M rows of one view (benchmarks/pit_join.py):
# 1 part peaks at 0.97 GB, 2 parts at 0.62 GB for 1.1x the time, 3 parts at 0.55 GB for 1.15x.
RETRIEVAL_PART_ROWS = 5_000_000
# Record batches streamed to the file: there, in 3 parts, 30,720 rows gave 0.53 GB and 1.39 s;
# 122,880, 0.58 GB and 1.55 s.
WRITE_BATCH_ROWS = 30_720


def retrieval_parts(
    con: duckdb.DuckDBPyConnection,
    entity_sql: str,
    views: tuple[FeatureView, ...],
    event_time_range: tuple[datetime, datetime] | None = None,
    part_rows: int = RETRIEVAL_PART_ROWS,
) -> int:
    """Into how many entity parts a retrieval is cut so that each joins at most `part_rows` rows
    of any view keyed on the first view's entity key (the rows in the range, when given).

    One part when the entity rows' key and a view's key differ in type: equal values of two
    types (`'7'` and `7`) join but hash apart, so parts would not line up.
    """
    if not views:
        return 1
    key = quote_identifier(views[0].entity_key)
    keyed = [v for v in views if v.entity_key == views[0].entity_key]
    entity_type = con.sql(f"select {key} from ({entity_sql})").types[0]
    if any(con.sql(f"select {key} from {v.source}").types[0] != entity_type for v in keyed):
        return 1
    largest = 0
    for view in keyed:
        servable = _servable_rows(view, event_time_range)
        where = f" where {servable}" if servable else ""
        largest = max(largest, con.sql(f"select count(*) from {view.source}{where}").fetchall()[0][0])
    return max(1, -(-largest // part_rows))


def retrieve_parts(
    con: duckdb.DuckDBPyConnection,
    entity_sql: str,
    event_time: str,
    views: tuple[FeatureView, ...],
    event_time_range: tuple[datetime, datetime] | None = None,
    part_rows: int = RETRIEVAL_PART_ROWS,
) -> Iterator[duckdb.DuckDBPyRelation]:
    """The retrieval as lazy relations, one per entity part (`retrieval_parts`), to be consumed
    one after the other: memory follows a part, not the view. Their rows together are
    `retrieve`'s, each once. While they are consumed the connection plans every ASOF join as
    one (DuckDB would loop over a part whose size it misjudges); the setting is restored after.

    With several parts the entity rows are computed once, into a temporary table the parts
    read, dropped when the generator ends or is closed (so a part must run before the next is
    asked for, as `collect_parts` and `write_parts` do; one kept for later fails, naming the
    table). The entity query is often a join over the lake (the training set's labelled
    events with their transactions): run once per part, it made the training set's cost grow
    faster than its rows (`benchmarks/scaling.py --days 53`, 500k rows a day, 6 parts)."""
    parts = retrieval_parts(con, entity_sql, views, event_time_range, part_rows)
    if parts == 1:
        yield retrieve(con, entity_sql, event_time, views, event_time_range)
        return
    (threshold,) = con.sql("select current_setting('asof_loop_join_threshold')").fetchall()[0]
    entities = f"meridian_retrieval_entities_{uuid.uuid4().hex[:16]}"
    con.execute(f"create temporary table {entities} as {entity_sql}")
    con.execute("set asof_loop_join_threshold = 0")
    try:
        for i in range(parts):
            yield con.sql(
                point_in_time_sql(
                    f"select * from {entities}", event_time, views, event_time_range, (i, parts)
                )
            )
    finally:
        con.execute(f"set asof_loop_join_threshold = {int(threshold)}")
        con.execute(f"drop table if exists {entities}")


def collect_parts(parts: Iterable[duckdb.DuckDBPyRelation]) -> pl.DataFrame:
    """A retrieval's parts (`retrieve_parts`) as one polars frame, joined one after the other."""
    frames = [rel.pl() for rel in parts]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


def write_parts(parts: Iterable[duckdb.DuckDBPyRelation], path: Path) -> int:
    """A retrieval's parts (`retrieve_parts`) written to one Parquet file, each joined and
    streamed in record batches in turn; its rows. Written to a temporary name and renamed:
    `path` holds a whole retrieval, or what it held before."""
    from meridian.lake import atomic_target

    rows = 0
    with atomic_target(path) as tmp:
        writer = None
        try:
            for rel in parts:
                reader = rel.fetch_record_batch(WRITE_BATCH_ROWS)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, reader.schema)
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows
