"""Which drift rule judges which column, and the drift rows of a region-day (batch and served).

meridian.drift holds the statistics and their default thresholds by kind; this module
holds the per-feature exceptions and configured overrides, and reads what the service
served (its decision log) so served inputs are judged like batch ones.
"""

import math
from typing import get_args

import polars as pl

from meridian.batch_scoring import FEATURES_COMPLETE
from meridian.drift import DriftRule, Method, column_drift, frame_drift
from meridian.lake import partition_file

STATUS_RANK = {"ok": 0, "no_data": 0, "warn": 1, "error": 2}


# Per-feature rules beside meridian.drift's defaults by kind (PSI for numeric, JS for categorical).
FEATURE_RULES: dict[str, DriftRule] = {
    # A merchant's values repeat on every one of its transactions: the day's sample holds as
    # many independent values as merchants that traded (~150 here), and which large
    # merchants traded moves decile PSI by 0.5+ on a quiet day. KS bounds the largest gap
    # between the two CDFs and does not over-react to a few heavy merchants.
    "merchant_risk__": DriftRule("ks", 0.15, 0.3, "entity-level feature: KS, robust to few, heavy entities"),
}


def parse_rule(spec: str) -> DriftRule:
    """A configured rule, "method:warn:error" (e.g. "ks:0.1:0.2"); ValueError saying what is wrong.

    The levels are finite, 0 <= warn <= error: a NaN level would never alert, and a warning
    level above the error level would make the warning unreachable.
    """
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"{spec!r}: a drift rule is method:warn:error, e.g. 'ks:0.1:0.2'")
    method, warn_text, error_text = (p.strip() for p in parts)
    if method not in get_args(Method):
        raise ValueError(f"{spec!r}: unknown method {method!r}; one of {', '.join(get_args(Method))}")
    try:
        warn, error = float(warn_text), float(error_text)
    except ValueError:
        raise ValueError(f"{spec!r}: the warn and error levels must be numbers") from None
    if not (math.isfinite(warn) and math.isfinite(error) and 0 <= warn <= error):
        raise ValueError(f"{spec!r}: the levels must be finite with 0 <= warn <= error")
    return DriftRule(method, warn, error, "configured")


def rule_for(column: str, overrides: dict[str, str]) -> DriftRule | None:
    """The rule for a column: a config override, else FEATURE_RULES by prefix, else the kind's default."""
    for prefix, spec in sorted(overrides.items(), key=lambda kv: -len(kv[0])):
        if column.startswith(prefix):
            return parse_rule(spec)
    for prefix, rule in FEATURE_RULES.items():
        if column.startswith(prefix):
            return rule
    return None


def drift_rows(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    overrides: dict[str, str] | None = None,
) -> list[dict]:
    rules = {c: rule_for(c, overrides or {}) for c in columns}
    return [r.row() for r in frame_drift(reference, current, columns, rules=rules)]


def served_drift(paths, day: str, reference: pl.DataFrame, columns: list[str], overrides) -> list[dict]:
    """Drift of what the scoring service served on `day` (its decision log): the score, and
    each model input as it was scored, named "<column> (served)"."""
    served = partition_file(paths.table("scoring_decisions"), day)
    if not served.exists():
        return []
    decisions = pl.read_parquet(served)
    # Decisions scored on windows still warming up are no evidence of drift (nor logs from
    # before the flag existed, which cannot say).
    decisions = decisions.filter(
        pl.col(FEATURES_COMPLETE).fill_null(False)
        if FEATURES_COMPLETE in decisions.columns
        else pl.lit(False)
    )
    if decisions.is_empty():
        return []
    rows = [column_drift("score (served)", reference["score"], decisions["score"]).row()]
    if "features" in decisions.columns and decisions["features"].is_not_null().any():
        logged = decisions.filter(pl.col("features").is_not_null())
        dtype = pl.Struct({c: reference.schema[c] for c in columns})
        values = logged.select(pl.col("features").str.json_decode(dtype)).unnest("features")
        for r in drift_rows(reference, values, columns, overrides):
            rows.append({**r, "column": f"{r['column']} (served)"})
    return rows
