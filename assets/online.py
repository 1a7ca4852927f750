"""Online features: each region-day's latest feature values per entity, pushed to the online store.

Materializing a region-day reads, per feature view, the rows whose feature time falls on
that day, keeps the latest per entity (ties broken by created time, as offline), and
writes them to the region's online store. Only entities that changed that day are
written, so the nightly run is incremental; a backfill of an older day cannot overwrite
a newer value, because the store refuses writes older than what it holds
(meridian.online_store). Re-running a day is idempotent.
"""

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import polars as pl

from assets.features import VIEWS, view_asset_key
from assets.partitions import REGION_DAY_PARTITIONS, RegionFailures, days_by_region
from meridian.feature_store import (
    FeatureView,
    complete_from,
    feature_history_path,
    feature_tie_break,
    history_start,
)
from meridian.lake import write_bytes_atomic
from meridian.locks import file_lock
from meridian.online_store import OnlineRow, encode_frame, to_micros
from meridian.report import markdown_table
from meridian.validation import event_time_window
from resources.lake import RegionalLakeResource
from resources.online_store import OnlineStoreResource
from resources.topology import RegionTopologyResource

ONLINE_GROUP = "online"


def latest_rows_sql(view: FeatureView, day: str) -> str:
    """The latest row per entity among the view's rows with feature time on `day`."""
    start = datetime.fromisoformat(day)
    end = start + timedelta(days=1)
    feats = ", ".join(f'"{f.name}"' for f in view.features)
    return (
        f'select "{view.entity_key}" as entity, {view.event_timestamp} as feature_time, {feats} '
        f"from {view.source} "
        f"where {view.event_timestamp} >= timestamp '{start}' and {view.event_timestamp} < timestamp '{end}' "
        f'qualify row_number() over (partition by "{view.entity_key}" '
        f"order by {view.event_timestamp} desc, {view.created_timestamp} desc, {feature_tie_break(view)}) = 1"
    )


def latest_frame(con: duckdb.DuckDBPyConnection, view: FeatureView, day: str) -> pl.DataFrame:
    """The view's latest rows of `day`, encoded for the online store (entity, event time, JSON)."""
    frame = con.sql(latest_rows_sql(view, day)).pl()
    return encode_frame(frame, "entity", "feature_time", [f.name for f in view.features])


def online_rows(con: duckdb.DuckDBPyConnection, view: FeatureView, day: str) -> Iterator[OnlineRow]:
    """The same rows as OnlineRow objects (tests compare the bulk path with it)."""
    cursor = con.cursor()
    cursor.execute(latest_rows_sql(view, day))
    names = [f.name for f in view.features]
    while batch := cursor.fetchmany(10_000):
        for entity, feature_time, *values in batch:
            yield OnlineRow(
                view=view.name,
                entity=str(entity),
                event_time_us=to_micros(feature_time),
                version=view.version,
                values=dict(zip(names, values, strict=True)),
            )


@dg.asset(
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[view_asset_key(name) for name in VIEWS],
    group_name=ONLINE_GROUP,
    owners=["team:fraud-ml"],
    kinds={"sqlite", "redis"},
    description="Latest feature values per entity in the region's online store (only entities "
    "that changed on the day; never older than what the store holds).",
)
def online_features(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    per_day = []
    held: dict[str, dict[str, int]] = {}
    complete: dict[str, str] = {}
    repaired: dict[str, dict[str, int]] = {}
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region, days in run_days.items():
        with failures.region(region):
            paths = lake.paths(topo, region)
            store = online_store.open(paths)
            try:
                store.ping()
                # A row stamped beyond the accepted clock skew wins every monotone comparison
                # and would freeze its entity for good: the batch path removes it, then writes.
                horizon_us = to_micros(event_time_window()[1])
                repaired[region] = {v.name: store.drop_future(v.name, horizon_us) for v in VIEWS.values()}
                with (
                    file_lock(paths.warehouse_lock, shared=True),
                    duckdb.connect(str(paths.warehouse), read_only=True) as con,
                ):
                    for day in days:
                        for view in VIEWS.values():
                            result = store.write_frame(view.name, view.version, latest_frame(con, view, day))
                            per_day.append(
                                {
                                    "region": region,
                                    "day": day,
                                    "view": view.name,
                                    "version": view.version,
                                    "entities_changed": result.applied + result.stale,
                                    "written": result.applied,
                                    "kept_newer": result.stale,
                                }
                            )
                    start = history_start(con)
                warm_from = complete_from(start, tuple(VIEWS.values()))
                write_bytes_atomic(
                    json.dumps(
                        {
                            "history_start": start.isoformat() if start else None,
                            "features_complete_from": warm_from.isoformat() if warm_from else None,
                            "warmup_days": {v.name: v.warmup.days for v in VIEWS.values()},
                        },
                        indent=1,
                    ).encode(),
                    feature_history_path(paths.root),
                )
                held[region] = {view.name: store.count(view.name) for view in VIEWS.values()}
                complete[region] = warm_from.isoformat() if warm_from else "no history"
            finally:
                store.close()
    failures.raise_if_any([context.asset_key], run_days)
    return dg.MaterializeResult(
        metadata={
            "backend": online_store.backend,
            "run_total_written": sum(r["written"] for r in per_day),
            "run_total_kept_newer": sum(r["kept_newer"] for r in per_day),
            "per_day": dg.MetadataValue.md(markdown_table(per_day)),
            "entities_held": dg.MetadataValue.json(held),
            "future_rows_repaired": dg.MetadataValue.json(repaired),
            "features_complete_from": dg.MetadataValue.json(complete),
        }
    )
