"""The run configs and the source resource a user edits in the launchpad refuse a value outside its range, naming the
field: a share of 1.5, a NaN threshold or zero trials fail the step at once with that message
instead of training on a split that cannot exist or reporting metrics at a threshold of 2."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from assets.performance import PerformanceConfig
from assets.promotion import PromotionConfig
from assets.serving import DeploymentSettings
from assets.training import TrainingConfig, TrainingSetConfig, TuningConfig
from resources.source import TransactionSourceResource


@pytest.mark.parametrize(
    ("config", "values"),
    [
        (TrainingSetConfig, {"validation_share": 1.5}),
        (TrainingSetConfig, {"test_share": float("nan")}),
        (TrainingSetConfig, {"test_share": 0.0}),
        (TrainingSetConfig, {"as_of": "next tuesday"}),
        (TuningConfig, {"n_trials": 0}),
        (TuningConfig, {"timeout_seconds": float("inf")}),
        (TuningConfig, {"max_rounds": -1}),
        (TrainingConfig, {"max_rounds": 0}),
        (PromotionConfig, {"calibration_tolerance": -0.1}),
        (PromotionConfig, {"min_pr_auc_gain": float("nan")}),
        (PerformanceConfig, {"threshold": 2.0}),
        (PerformanceConfig, {"window_days": 0}),
        (PerformanceConfig, {"max_pr_auc_drop": float("inf")}),
        (DeploymentSettings, {"challenger_weight": 1.5}),
        (DeploymentSettings, {"canary_step": -1}),
        (TransactionSourceResource, {"rows_per_day": 0}),
        (TransactionSourceResource, {"malformed_rate": 0.5}),
        (TransactionSourceResource, {"fraud_rate": -0.01}),
    ],
)
def test_a_value_outside_its_range_is_refused_naming_the_field(config, values):
    with pytest.raises(ValidationError) as refused:
        config(**values)
    (field,) = values
    assert field in str(refused.value)


def test_the_defaults_and_the_values_the_cli_uses_are_accepted():
    TrainingSetConfig(as_of="2026-02-20", validation_share=0.15, test_share=0.15)
    TuningConfig(n_trials=2, timeout_seconds=90.0, max_rounds=60)
    TrainingConfig()
    PromotionConfig()
    PerformanceConfig()
    DeploymentSettings(strategy="ab", challenger_weight=0.5)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("psi:0.1", "method:warn:error"),
        ("cosine:0.1:0.2", "unknown method 'cosine'"),
        ("ks:low:high", "must be numbers"),
        ("psi:nan:nan", "finite"),
        ("psi:0.3:0.1", "0 <= warn <= error"),
        ("js:-0.1:0.2", "0 <= warn <= error"),
    ],
)
def test_a_drift_rule_that_cannot_alert_as_meant_is_refused_naming_it(spec, problem):
    from assets.drift import DriftConfig

    with pytest.raises(ValidationError, match=problem):
        DriftConfig(rules={"amount_usd": spec})


def test_a_configured_drift_rule_is_used_for_its_columns():
    from assets.drift import DriftConfig
    from meridian.drift_rules import rule_for

    config = DriftConfig(rules={"amount": "ks : 0.1 : 0.2", "amount_usd": "wasserstein:0.5:1"})
    assert (rule_for("amount_usd", config.rules).method, rule_for("amount_usd", config.rules).warn) == (
        "wasserstein",
        0.5,
    )  # the longest prefix wins
    assert rule_for("amount_local", config.rules).method == "ks"
