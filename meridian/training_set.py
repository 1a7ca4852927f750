"""Training sets: matured labels joined point-in-time to the feature views, split by time.

A transaction is a usable example once its label has matured and its feature windows are
complete (its event time at least the views' warm-up after the first day of history) (`label_matures_at`, the
chargeback window): positives and negatives alike, so recent days, whose frauds show up
before their legitimate transactions can be trusted, never inflate the positive rate. Examples are
split by event day, never at random, so validation and test data are always later than
what the model learned from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import polars as pl

from meridian.feature_store import FeatureView, complete_from, history_start, warmup_of
from meridian.modeling import transaction_entities_sql
from meridian.retrieval import collect_parts, retrieve_parts
from meridian.topology import Region

SPLITS = ("train", "validation", "test")


class NotEnoughHistory(ValueError):
    """Too few days of matured labels to split by time."""


@dataclass(frozen=True)
class SplitPlan:
    train_days: tuple[date, date]
    validation_days: tuple[date, date]
    test_days: tuple[date, date]


def plan_time_split(days: list[date], validation_share: float = 0.15, test_share: float = 0.15) -> SplitPlan:
    """Consecutive day ranges: the earliest days train, the latest test; each gets at least one day."""
    days = sorted(set(days))
    if len(days) < 3:
        raise NotEnoughHistory(
            f"need at least 3 days of matured labels to split by time, have {len(days)}: "
            "ingest more days (labels mature after the chargeback window)"
        )
    n_test = max(1, round(len(days) * test_share))
    n_valid = max(1, round(len(days) * validation_share))
    n_train = len(days) - n_test - n_valid
    if n_train < 1:
        n_train, n_valid, n_test = 1, 1, len(days) - 2
    train, valid, test = days[:n_train], days[n_train : n_train + n_valid], days[n_train + n_valid :]
    return SplitPlan((train[0], train[-1]), (valid[0], valid[-1]), (test[0], test[-1]))


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    views: tuple[FeatureView, ...],
    region: Region,
    as_of: datetime | None = None,
    validation_share: float = 0.15,
    test_share: float = 0.15,
) -> tuple[pl.DataFrame, SplitPlan, datetime]:
    """Matured labelled events with request features, point-in-time view features and a `split` column."""
    if as_of is None:
        last_day = con.execute("select max(event_day) from labelled_events").fetchall()[0][0]
        if last_day is None:
            raise NotEnoughHistory("labelled_events is empty: nothing to train on")
        as_of = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
    source = (
        "(select s.*, l.is_fraud, l.label_matures_at from labelled_events as l "
        "join stg_transactions as s using (transaction_id))"
    )
    warm_from = complete_from(history_start(con), views)
    if warm_from is None:
        raise NotEnoughHistory("stg_transactions is empty: nothing to train on")
    # Only rows whose every window is covered by history: a truncated window is a value the
    # same customer never has in steady state (training/serving skew).
    matured = f"t.label_matures_at <= timestamp '{as_of}' and t.event_time >= timestamp '{warm_from}'"
    entity_sql = transaction_entities_sql(region, source, matured, extra="t.is_fraud::int as label")
    frame = collect_parts(retrieve_parts(con, entity_sql, "event_time", views)).sort(
        "event_time", "transaction_id"
    )
    if frame.is_empty():
        raise NotEnoughHistory(
            f"no label of a transaction after the feature warm-up (from {warm_from:%Y-%m-%d}, "
            f"{warmup_of(views).days} days after the first day of history) has matured by "
            f"{as_of:%Y-%m-%d %H:%M}: labels mature after the chargeback window; ingest more days"
        )
    plan = plan_time_split(frame["event_day"].to_list(), validation_share, test_share)
    split = (
        pl.when(pl.col("event_day") <= plan.train_days[1])
        .then(pl.lit("train"))
        .when(pl.col("event_day") <= plan.validation_days[1])
        .then(pl.lit("validation"))
        .otherwise(pl.lit("test"))
    )
    return frame.with_columns(split.alias("split")), plan, as_of


def rows_without_features(frame: pl.DataFrame, views: tuple[FeatureView, ...]) -> dict[str, int]:
    """Per view, the rows that got the view's documented defaults (entity unseen or outside the TTL)."""
    return {view.name: int(frame[view.column("feature_time")].null_count()) for view in views}


def warmup_excluded_rows(
    con: duckdb.DuckDBPyConnection,
    views: tuple[FeatureView, ...],
    as_of: datetime,
    warm_from: datetime | None = None,
) -> int:
    """Matured labelled rows left out of training because their windows were still warming up
    (`warm_from`: the region's `complete_from`, when the caller has it)."""
    warm_from = warm_from or complete_from(history_start(con), views)
    if warm_from is None:
        return 0
    return con.execute(
        "select count(*) from labelled_events where label_matures_at <= ? and event_time < ?",
        [as_of, warm_from],
    ).fetchall()[0][0]
