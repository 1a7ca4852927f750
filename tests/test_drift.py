"""Drift statistics against SciPy's reference implementations, and defined results for bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import spatial
from scipy import stats as sps

from meridian.drift import column_drift, decile_edges

samples = st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300)


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_ks_and_wasserstein_equal_scipy(a, b):
    drift = column_drift("x", pl.Series("x", a), pl.Series("x", b), kind="numeric")
    assert drift.ks == pytest.approx(sps.ks_2samp(a, b).statistic, abs=1e-12)
    scale = float(np.std(a)) or 1.0
    assert drift.wasserstein * scale == pytest.approx(sps.wasserstein_distance(a, b), rel=1e-9, abs=1e-6)
    assert drift.psi >= 0 and 0 <= drift.js <= 1 and drift.status in ("ok", "warn", "error")


def test_psi_and_js_on_the_reference_deciles_match_a_direct_computation():
    rng = np.random.default_rng(3)
    ref, cur = rng.lognormal(3, 1, 50_000), rng.lognormal(3.8, 1, 40_000)
    drift = column_drift("amount", pl.Series("amount", ref), pl.Series("amount", cur))
    edges = np.concatenate([[-np.inf], decile_edges(np.sort(ref)), [np.inf]])
    p = np.histogram(ref, edges)[0] / ref.size
    q = np.histogram(cur, edges)[0] / cur.size
    assert np.allclose(p, 0.1, atol=1e-3)  # deciles: ten equal bins of the reference
    assert drift.psi == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-9)
    assert drift.js == pytest.approx(spatial.distance.jensenshannon(p, q, base=2), rel=1e-9)
    assert drift.status == "error" and drift.kind == "numeric"


def test_categorical_columns_get_chi_square_js_and_unseen_categories():
    ref = pl.Series("channel", ["pos"] * 600 + ["ecom"] * 300 + ["contactless"] * 100)
    cur = pl.Series("channel", ["pos"] * 400 + ["ecom"] * 500 + ["crypto"] * 100)
    drift = column_drift("channel", ref, cur)
    table = np.array([[100, 0, 300, 600], [0, 100, 500, 400]])  # contactless, crypto, ecom, pos
    chi2, pvalue, _, _ = sps.chi2_contingency(table, correction=False)
    assert drift.kind == "categorical" and drift.method == "js"
    assert drift.chi2 == pytest.approx(chi2) and drift.chi2_pvalue == pytest.approx(pvalue)
    assert drift.unseen_categories == ["crypto"] and "never seen in training" in drift.reason
    assert drift.status == "error"


def test_identical_samples_do_not_drift():
    values = pl.Series("x", np.random.default_rng(1).normal(size=20_000))
    drift = column_drift("x", values, values)
    assert (
        drift.status == "ok" and drift.psi == 0 and drift.ks == 0 and drift.wasserstein == 0 and drift.js == 0
    )


@pytest.mark.parametrize(
    ("reference", "current", "status", "reason"),
    [
        ([1.0, 2.0, 3.0], [], "no_data", "the current sample is empty"),
        ([None, None], [None], "no_data", "all values are null on both sides"),
        ([1.0, 2.0], [None, None], "error", "every current value is null"),
        ([None, None], [1.0], "error", "every reference value is null"),
    ],
)
def test_empty_and_all_null_columns_have_a_defined_result(reference, current, status, reason):
    drift = column_drift(
        "x", pl.Series("x", reference, dtype=pl.Float64), pl.Series("x", current, dtype=pl.Float64)
    )
    assert drift.status == status and reason in drift.reason and drift.value is None


def test_a_constant_column_stays_finite_and_a_moved_constant_is_drift():
    same = column_drift("k", pl.Series("k", [5.0] * 100), pl.Series("k", [5.0] * 80), kind="numeric")
    assert same.status == "ok" and same.psi == 0 and same.wasserstein == 0
    moved = column_drift("k", pl.Series("k", [5.0] * 100), pl.Series("k", [7.0] * 80), kind="numeric")
    assert moved.status == "error" and np.isfinite(moved.psi) and moved.wasserstein == pytest.approx(2.0)


def test_nan_counts_as_null_and_a_null_share_shift_warns():
    ref = pl.Series("x", np.random.default_rng(2).normal(size=1000))
    cur = pl.Series("x", np.where(np.arange(1000) < 300, np.nan, np.random.default_rng(2).normal(size=1000)))
    drift = column_drift("x", ref, cur)
    assert drift.current_null_share == pytest.approx(0.3) and drift.status in ("warn", "error")
    assert "null share moved by 0.30" in drift.reason


def test_psi_with_evidentlys_binning_agrees_with_evidently_to_1e_9():
    """Evidently's own PSI function, in the virtual environment benchmarks/drift.py keeps for
    it (created here when missing), on 50 generated columns — skewed, counts, categorical
    with a category the reference never saw — against `psi_evidently_binning`."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "drift.py"), "--psi-check", "--rows", "20000"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["features"] == 50
    assert figures["psi_max_abs_diff_vs_evidently"] <= 1e-9
