"""Drift between a reference sample (the training data) and a current one, column at a time.

Everything is whole-column polars and NumPy: each column is sorted once and every
statistic comes from the sorted arrays with `searchsorted` (no Python loop over rows, no
pandas); `frame_drift` runs columns two at a time.

Numeric columns
- PSI over 10 bins at the reference's deciles (ties merged), proportions floored at 1e-4.
  The alarm by default: WARN ≥ 0.1, ERROR ≥ 0.25 — the usual credit-risk reading (< 0.1
  stable, 0.1–0.25 a shift worth a look, > 0.25 a population the model has not seen);
  unlike p-values it does not turn significant for a negligible shift at 1M rows.
- Kolmogorov–Smirnov statistic and its asymptotic p-value.
- Jensen–Shannon distance (base 2, in [0, 1]) over the same bins.
- Wasserstein-1 distance, normalised by the reference's standard deviation (so a
  threshold means "this many standard deviations"; a constant reference uses 1).
Categorical columns (and booleans, and numeric columns with ≤ 20 distinct values)
- Jensen–Shannon distance over category frequencies (alarm by default: WARN ≥ 0.1,
  ERROR ≥ 0.2), chi-square test of homogeneity (statistic, p-value) and PSI over the
  categories. A category never seen in the reference is its own bin and is listed.

Defined results for bad input, never NaN:
- an empty current sample: status `no_data`, every statistic None, reason given;
- an all-null column on one side only: status `error` ("the feature is missing");
  all-null on both sides: `no_data`;
- nulls otherwise: the statistics use the non-null values; the null share of both
  sides is reported, and a null share that moves by more than `null_share_tolerance`
  (0.1) raises the status to at least WARN;
- a constant column: bins collapse to the one value (plus "elsewhere"), Wasserstein is
  normalised by 1; statistics stay finite.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import polars as pl
from scipy import special, stats

Kind = Literal["numeric", "categorical"]
Method = Literal["psi", "ks", "js", "wasserstein", "chi2"]
PROPORTION_FLOOR = 1e-4
N_BINS = 10
MAX_CATEGORIES_AS_NUMERIC = 20


@dataclass(frozen=True)
class DriftRule:
    """Which statistic raises the alarm for a column, and at what levels."""

    method: Method
    warn: float
    error: float
    reason: str


DEFAULT_RULES: dict[Kind, DriftRule] = {
    "numeric": DriftRule(
        "psi", 0.1, 0.25, "PSI < 0.1 is stable, 0.1-0.25 moderate, > 0.25 major (credit-risk convention)"
    ),
    "categorical": DriftRule(
        "js", 0.1, 0.2, "Jensen-Shannon distance: bounded in [0, 1], does not saturate with sample size"
    ),
}


@dataclass
class ColumnDrift:
    column: str
    kind: Kind
    method: Method
    value: float | None
    status: Literal["ok", "warn", "error", "no_data"]
    reason: str
    reference_rows: int
    current_rows: int
    reference_null_share: float | None
    current_null_share: float | None
    psi: float | None = None
    ks: float | None = None
    ks_pvalue: float | None = None
    js: float | None = None
    wasserstein: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    unseen_categories: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        out = asdict(self)
        out["unseen_categories"] = ", ".join(self.unseen_categories[:5])
        return out


def _floored(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum()
    return np.maximum(p, PROPORTION_FLOOR)


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    p, q = _floored(ref_counts), _floored(cur_counts)
    return float(np.sum((q - p) * np.log(q / p)))


def js_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    p, q = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(np.sqrt(max(0.0, (kl_p + kl_q) / 2)))


def decile_edges(ref_sorted: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged (a constant column: none)."""
    qs = np.quantile(ref_sorted, np.linspace(0, 1, n_bins + 1)[1:-1], method="linear")
    return np.unique(qs)


def binned(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Counts per bin (-inf, e0], (e0, e1], ..., (ek, inf) of an already sorted array."""
    cuts = np.searchsorted(sorted_values, inner_edges, side="right")
    return np.diff(np.concatenate([[0], cuts, [sorted_values.size]])).astype(np.float64)


def ks_and_wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, its asymptotic p-value, W1 distance) of two sorted arrays, in one pass.

    Both come from the two empirical CDFs evaluated on the merged sample: KS is their
    largest gap, W1 the area between them (as scipy.stats.wasserstein_distance computes it).
    """
    merged = np.concatenate([a, b])
    merged.sort(kind="stable")  # two sorted runs: a merge
    cdf_a = np.searchsorted(a, merged, "right") / a.size
    cdf_b = np.searchsorted(b, merged, "right") / b.size
    gaps = np.abs(cdf_a - cdf_b)
    d = float(gaps.max())
    w1 = float(np.dot(gaps[:-1], np.diff(merged)))
    en = a.size * b.size / (a.size + b.size)
    return d, float(special.kolmogorov(np.sqrt(en) * d)), w1


def _status(value: float, rule: DriftRule) -> Literal["ok", "warn", "error"]:
    return "error" if value >= rule.error else "warn" if value >= rule.warn else "ok"


def column_kind(values: pl.Series) -> Kind:
    if values.dtype.is_numeric() and values.dtype != pl.Boolean:
        if values.drop_nulls().n_unique() <= MAX_CATEGORIES_AS_NUMERIC:
            return "categorical"
        return "numeric"
    return "categorical"


def column_drift(
    name: str,
    reference: pl.Series,
    current: pl.Series,
    kind: Kind | None = None,
    rule: DriftRule | None = None,
    null_share_tolerance: float = 0.1,
) -> ColumnDrift:
    """Every statistic of `kind` for one column, and the status from `rule`'s statistic."""
    if reference.dtype.is_float():
        reference = reference.fill_nan(None)
    if current.dtype.is_float():
        current = current.fill_nan(None)
    kind = kind or column_kind(reference)
    rule = rule or DEFAULT_RULES[kind]
    base = {
        "column": name,
        "kind": kind,
        "method": rule.method,
        "reference_rows": reference.len(),
        "current_rows": current.len(),
        "reference_null_share": reference.null_count() / reference.len() if reference.len() else None,
        "current_null_share": current.null_count() / current.len() if current.len() else None,
    }
    if current.len() == 0 or reference.len() == 0:
        side = "current" if current.len() == 0 else "reference"
        return ColumnDrift(value=None, status="no_data", reason=f"the {side} sample is empty", **base)
    ref, cur = reference.drop_nulls(), current.drop_nulls()
    if ref.len() == 0 and cur.len() == 0:
        return ColumnDrift(value=None, status="no_data", reason="all values are null on both sides", **base)
    if ref.len() == 0 or cur.len() == 0:
        side = "current" if cur.len() == 0 else "reference"
        return ColumnDrift(
            value=None, status="error", reason=f"the feature is missing: every {side} value is null", **base
        )
    result = ColumnDrift(value=None, status="ok", reason="", **base)
    if kind == "numeric":
        a = ref.cast(pl.Float64).sort().to_numpy()
        b = cur.cast(pl.Float64).sort().to_numpy()
        edges = decile_edges(a)
        rc, cc = binned(a, edges), binned(b, edges)
        result.psi = psi_from_counts(rc, cc)
        result.js = js_from_counts(rc, cc)
        result.ks, result.ks_pvalue, w1 = ks_and_wasserstein_sorted(a, b)
        scale = float(np.std(a))
        result.wasserstein = w1 / (scale if scale > 0 else 1.0)
    else:
        counts = (
            ref.cast(pl.String)
            .value_counts(name="reference")
            .join(cur.cast(pl.String).value_counts(name="current"), on=ref.name, how="full", coalesce=True)
            .fill_null(0)
            .sort(ref.name)
        )
        rc = counts["reference"].to_numpy().astype(np.float64)
        cc = counts["current"].to_numpy().astype(np.float64)
        result.unseen_categories = counts.filter(pl.col("reference") == 0)[ref.name].to_list()
        result.psi = psi_from_counts(rc, cc)
        result.js = js_from_counts(rc, cc)
        if counts.height > 1:
            chi2, pvalue, _, _ = stats.chi2_contingency(np.vstack([rc, cc]), correction=False)
            result.chi2, result.chi2_pvalue = float(chi2), float(pvalue)
        else:
            result.chi2, result.chi2_pvalue = 0.0, 1.0  # one category on both sides: identical
    value = getattr(result, rule.method)
    if value is None:  # a rule for numeric columns (ks, wasserstein) on a column that is categorical
        rule = DEFAULT_RULES[kind]
        value = getattr(result, rule.method)
        result.method = rule.method
    result.value = value
    result.status = _status(value, rule)
    reasons = [f"{rule.method} {value:.4f} (warn >= {rule.warn}, error >= {rule.error})"]
    if result.unseen_categories:
        reasons.append(f"categories never seen in training: {result.unseen_categories[:5]}")
    shift = abs((result.current_null_share or 0) - (result.reference_null_share or 0))
    if shift > null_share_tolerance:
        reasons.append(f"null share moved by {shift:.2f}")
        if result.status == "ok":
            result.status = "warn"
    result.reason = "; ".join(reasons)
    return result


def frame_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    kinds: dict[str, Kind] | None = None,
    rules: dict[str, DriftRule | None] | None = None,
    threads: int = 2,
) -> list[ColumnDrift]:
    """`column_drift` for many columns, `threads` columns at a time (NumPy's sorts and searches
    release the GIL, so columns run in parallel on the machine's cores)."""
    from concurrent.futures import ThreadPoolExecutor

    kinds, rules = kinds or {}, rules or {}

    def one(column: str) -> ColumnDrift:
        return column_drift(column, reference[column], current[column], kinds.get(column), rules.get(column))

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, columns))


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """Evidently's zero filling: a zero becomes min(non-zero) / 1e6, or 1e-4 if that minimum is larger."""
    smallest = percents[percents != 0].min()
    out = percents.copy()
    out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


def psi_evidently_binning(reference: pl.Series, current: pl.Series, kind: Kind) -> float:
    """PSI binned exactly as Evidently 0.7 bins it (legacy `get_binned_data`), for comparison.

    Numeric columns with more than 20 distinct reference values: equal-width bins over the
    combined range, their number from Sturges' rule; otherwise one bin per value seen on
    either side, as a share of all rows (nulls included in the denominator). Zero shares
    are filled as Evidently fills them. Meridian's own PSI uses reference deciles instead
    (see the module docstring): equal-width bins put most of a skewed feature (amounts) in
    one bin and hide shifts inside it.
    """
    if kind == "numeric" and reference.drop_nulls().n_unique() > MAX_CATEGORIES_AS_NUMERIC:
        ref = reference.cast(pl.Float64).to_numpy()
        cur = current.cast(pl.Float64).to_numpy()
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        p = np.histogram(ref, edges)[0] / ref.size
        q = np.histogram(cur, edges)[0] / cur.size
    else:
        name = reference.name
        counts = (
            reference.drop_nulls()
            .value_counts(name="reference")
            .join(current.drop_nulls().value_counts(name="current"), on=name, how="full", coalesce=True)
            .fill_null(0)
        )
        p = counts["reference"].to_numpy() / reference.len()
        q = counts["current"].to_numpy() / current.len()
    p, q = _fill_zeroes(p), _fill_zeroes(q)
    return float(np.sum((p - q) * np.log(p / q)))
