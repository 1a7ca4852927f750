"""Matured performance: scored transactions joined to their matured labels, metrics per model version and day."""

from datetime import datetime

import duckdb
import polars as pl

from meridian import modeling
from meridian.batch_scoring import FEATURES_COMPLETE, VIEW_TUPLE
from meridian.feature_store import complete_from, history_start


def matured_predictions(paths, con: duckdb.DuckDBPyConnection, as_of: datetime) -> pl.DataFrame:
    """Every scored transaction whose label has matured by `as_of`, with its label."""
    files = sorted(paths.table("predictions").glob("day=*/*.parquet"))
    if not files:
        return pl.DataFrame()
    scored = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if FEATURES_COMPLETE not in scored.columns:
        scored = scored.with_columns(pl.lit(None, dtype=pl.Boolean).alias(FEATURES_COMPLETE))
    # Rows scored on windows still warming up say nothing about the model in steady state.
    # (Predictions written before the flag existed get it from the warm-up's first day.)
    warm_from = complete_from(history_start(con), VIEW_TUPLE)
    known = pl.lit(False) if warm_from is None else pl.col("event_day") >= pl.lit(warm_from.date())
    scored = scored.filter(pl.col(FEATURES_COMPLETE).fill_null(known)).select(
        "transaction_id", "event_day", "score", "model_version"
    )
    labels = con.sql(
        f"select transaction_id, is_fraud::int as label from labelled_events "
        f"where label_matures_at <= timestamp '{as_of:%Y-%m-%d %H:%M:%S}'"
    ).pl()
    return scored.join(labels, on="transaction_id", how="inner")


def champion_test_pr_auc(tags: dict[str, str]) -> float | None:
    """The test PR-AUC a model version was registered with; None when missing or not a number in [0, 1]."""
    import math

    try:
        value = float(tags["test_pr_auc"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def performance_rows(frame: pl.DataFrame, threshold: float) -> list[dict]:
    """Metrics per (model version, day); a day with one class only says so instead of a number."""
    rows = []
    for (version, day), group in frame.group_by("model_version", "event_day", maintain_order=True):
        row: dict[str, object] = {"model_version": int(version), "day": str(day), "rows": group.height}
        try:
            metrics = modeling.evaluate(group["label"].to_numpy(), group["score"].to_numpy(), threshold)
            row.update({k: round(v, 5) for k, v in metrics.items() if k not in ("rows",)})
            row["note"] = ""
        except ValueError as error:
            row["note"] = str(error)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["day"], r["model_version"]))
