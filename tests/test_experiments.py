"""A/B and canary decisions from decision logs: guardrails, significance, ramp steps."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from meridian.experiments import Guardrails, analyze, two_proportion_pvalue

RAMP = (5, 25, 50, 100)


def _log(n: int, variant: str, rng, score_shift=0.0, latency=1.0, fallbacks=0, fraud_when_flagged=None):
    scores = np.clip(rng.beta(1, 12, n) + score_shift, 0, 1)
    labels = None
    if fraud_when_flagged is not None:
        flagged = scores >= 0.5
        labels = np.where(flagged, rng.random(n) < fraud_when_flagged, rng.random(n) < 0.005).astype(int)
    return pl.DataFrame(
        {
            "variant": [variant] * n,
            "model_version": [2 if variant == "challenger" else 1] * n,
            "score": scores,
            "latency_ms": rng.gamma(4, latency / 4, n),
            "fallback": [("challenger alias not loaded" if i < fallbacks else None) for i in range(n)],
            "label": labels if labels is not None else [None] * n,
        },
        schema_overrides={"fallback": pl.String, "label": pl.Int64},
    )


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def test_a_healthy_canary_step_advances_and_the_last_step_promotes(rng):
    log = pl.concat([_log(300, "champion", rng), _log(300, "challenger", rng)])
    assert analyze(log, "canary", RAMP, 1)["decision"] == "advance"
    assert analyze(log, "canary", RAMP, 3)["decision"] == "promote"


def test_a_canary_without_enough_requests_holds(rng):
    log = pl.concat([_log(300, "champion", rng), _log(20, "challenger", rng)])
    result = analyze(log, "canary", RAMP, 0)
    assert result["decision"] == "hold" and "not enough requests" in result["reason"]


@pytest.mark.parametrize(
    ("challenger", "reason"),
    [
        ({"latency": 10.0}, "latency p99"),
        ({"fallbacks": 30}, "fallback rate"),
    ],
)
def test_a_failed_guardrail_rolls_back_even_before_enough_requests(rng, challenger, reason):
    log = pl.concat([_log(300, "champion", rng), _log(60, "challenger", rng, **challenger)])
    result = analyze(log, "canary", RAMP, 0)
    assert result["decision"] == "rollback" and reason in result["reason"]


def test_a_challenger_with_worse_matured_pr_auc_is_rolled_back(rng):
    good = _log(2000, "champion", rng, fraud_when_flagged=0.9)
    good = good.with_columns(
        label=((pl.col("score") > 0.3) & (pl.int_range(pl.len()) % 3 == 0)).cast(pl.Int64)
    )
    bad = _log(2000, "challenger", rng).with_columns(label=(pl.int_range(pl.len()) % 40 == 0).cast(pl.Int64))
    result = analyze(pl.concat([good, bad]), "ab", guardrails=Guardrails())
    assert result["decision"] == "rollback" and "PR-AUC" in result["reason"]


def test_an_ab_test_promotes_only_on_a_significant_precision_gain(rng):
    champion = _log(4000, "champion", rng, score_shift=0.45, fraud_when_flagged=0.30)
    better = _log(4000, "challenger", rng, score_shift=0.45, fraud_when_flagged=0.45)
    same = _log(4000, "challenger", rng, score_shift=0.45, fraud_when_flagged=0.30)
    promoted = analyze(pl.concat([champion, better]), "ab")
    assert promoted["decision"] == "promote" and promoted["tests"]["precision_p"] < 0.05
    held = analyze(pl.concat([champion, same]), "ab")
    assert (held["decision"] in ("hold",) and (held["tests"]["precision_p"] or 1) >= 0.05) or held[
        "decision"
    ] == "rollback"


def test_mann_whitney_and_two_proportion_tests_match_scipy(rng):
    log = pl.concat([_log(500, "champion", rng), _log(500, "challenger", rng, score_shift=0.05)])
    result = analyze(log, "ab")
    expected = stats.mannwhitneyu(
        log.filter(pl.col("variant") == "challenger")["score"].to_numpy(),
        log.filter(pl.col("variant") == "champion")["score"].to_numpy(),
    ).pvalue
    assert result["tests"]["mann_whitney_p"] == pytest.approx(expected)
    # The pooled two-proportion z-test is the uncorrected chi-square test of the 2 x 2 table.
    chi2 = stats.chi2_contingency([[45, 55], [30, 70]], correction=False)
    assert two_proportion_pvalue(45, 100, 30, 100) == pytest.approx(chi2.pvalue, rel=1e-9)
    assert two_proportion_pvalue(0, 100, 0, 100) is None


def test_champion_only_and_shadow_have_nothing_to_decide(rng):
    log = _log(300, "champion", rng)
    assert analyze(log, "champion")["decision"] == "none"
    assert analyze(log, "shadow")["decision"] == "none"


def test_every_guardrail_can_fail_and_a_tight_latency_factor_is_not_hidden_by_slack(rng):
    """Regression: the latency limit added a fixed 1 ms, so at sub-millisecond p99s even
    `latency_factor=0.05` passed a challenger exactly as fast as the champion."""
    fast = 0.3  # ms: a sub-millisecond service
    log = pl.concat([_log(400, "champion", rng, latency=fast), _log(400, "challenger", rng, latency=fast)])
    assert analyze(log, "canary", RAMP, 1)["decision"] == "advance"
    tight = analyze(log, "canary", RAMP, 1, Guardrails(latency_factor=0.05))
    assert tight["decision"] == "rollback" and "latency p99" in tight["reason"]
    # The slack is explicit now, and does what it says.
    assert analyze(log, "canary", RAMP, 1, Guardrails(latency_factor=0.05, latency_slack_ms=5.0))[
        "decision"
    ] == ("advance")
    one_fallback = pl.concat([_log(400, "champion", rng), _log(400, "challenger", rng, fallbacks=1)])
    assert (
        analyze(one_fallback, "canary", RAMP, 1, Guardrails(max_fallback_rate=0.0))["decision"] == "rollback"
    )
    assert (
        analyze(one_fallback, "canary", RAMP, 1, Guardrails(max_fallback_rate=0.01))["decision"] == "advance"
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_fallback_rate", -0.01),
        ("max_fallback_rate", 1.5),
        ("max_fallback_rate", float("nan")),
        ("latency_factor", 0.0),
        ("latency_factor", -1.0),
        ("latency_factor", float("inf")),
        ("latency_slack_ms", -1.0),
        ("max_pr_auc_drop", -0.1),
        ("max_pr_auc_drop", 2.0),
        ("min_requests", 0),
        ("min_requests", 1.5),
        ("threshold", 1.0),
        ("alpha", 0.0),
        ("alpha", True),
    ],
)
def test_a_guardrail_that_cannot_mean_anything_is_refused_naming_it(setting, value):
    from meridian.experiments import GuardrailError

    with pytest.raises(GuardrailError, match=f"{setting}="):
        Guardrails(**{setting: value})


def test_the_analysis_asset_refuses_nonsense_guardrails_before_reading_evidence(meridian_home):
    import dagster as dg

    from assets.definitions_file import load_definitions_module
    from assets.deployment_analysis import deployment_analysis

    result = dg.materialize(
        [deployment_analysis],
        resources=load_definitions_module().build_resources("local"),
        partition_key="eu-west",
        run_config={"ops": {"deployment_analysis": {"config": {"max_fallback_rate": -0.5}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = str(failure.step_failure_data.error)
    assert "max_fallback_rate=-0.5: a share in [0, 1]" in message
