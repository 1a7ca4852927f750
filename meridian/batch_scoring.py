"""Batch scoring of a region-day: the day's transactions with point-in-time features, scored by a booster.

The features are those the model was trained on (meridian.training_set), retrieved with
the same point-in-time rule; `features_complete` says whether every window of the row
was covered by the region's history, so monitoring can leave warming-up rows out.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from meridian import modeling
from meridian.feature_store import complete_from, history_start
from meridian.feature_views import feature_views

VIEW_TUPLE = tuple(feature_views())


# A scored row whose feature windows are complete (meridian.feature_store.complete_from).
FEATURES_COMPLETE = "features_complete"


# Each version hashes its definition and dbt SQL; the views are fixed at import.
VIEW_VERSIONS = {view.name: view.version for view in VIEW_TUPLE}


def prediction_features(
    con: duckdb.DuckDBPyConnection, region, day: str, warm_from: datetime | None = None
) -> pl.DataFrame:
    """The day's transactions with request features, point-in-time view features and
    `features_complete`. `warm_from` (the region's `complete_from`), when the caller scores many
    days of one region, saves scanning the region's history once per day."""
    from meridian.feature_store import retrieve

    entity_sql = modeling.transaction_entities_sql(region, "stg_transactions", f"t.event_day = date '{day}'")
    start = datetime.fromisoformat(day)
    # The day's transactions only need feature rows from (day − TTL) to the day's end.
    frame = retrieve(con, entity_sql, "event_time", VIEW_TUPLE, (start, start + timedelta(days=1))).pl()
    return with_features_complete(frame, warm_from or complete_from(history_start(con), VIEW_TUPLE))


def with_features_complete(frame: pl.DataFrame, warm_from: datetime | None) -> pl.DataFrame:
    """`features_complete`: the row's every window is covered by the region's history."""
    complete = pl.lit(False) if warm_from is None else pl.col("event_time") >= pl.lit(warm_from)
    return frame.with_columns(complete.alias(FEATURES_COMPLETE))


def score_frame(booster, frame: pl.DataFrame, model: str, version: int) -> pl.DataFrame:
    """Scores for every row of `frame`, with the model and feature-view versions that produced them.

    Rows are ordered by (event time, transaction id): DuckDB returns the retrieval in no
    particular order, and a re-run must write the same file byte for byte.
    """
    frame = frame.sort("event_time", "transaction_id")
    scores = booster.predict(modeling.design_matrix(frame, booster.feature_name()), num_threads=2)
    return frame.select(
        "transaction_id", "customer_id", "merchant_id", "event_time", "event_day", FEATURES_COMPLETE
    ).with_columns(
        pl.Series("score", scores, dtype=pl.Float64),
        pl.lit(model).alias("model_name"),
        pl.lit(version, dtype=pl.Int32).alias("model_version"),
        *(pl.lit(v).alias(f"{name}_view_version") for name, v in VIEW_VERSIONS.items()),
    )
