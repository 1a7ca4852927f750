"""Deployment strategies: sticky, deterministic assignment whose split matches the weights."""

from __future__ import annotations

import math

import pytest

from meridian import deployment
from meridian.deployment import DeploymentConfig

CUSTOMERS = [f"c-{i:06d}" for i in range(40_000)]


def _share(config: DeploymentConfig, customers=CUSTOMERS) -> float:
    return sum(config.variant(c) == "challenger" for c in customers) / len(customers)


def _within(observed: float, expected: float, n: int) -> bool:
    """Inside the binomial 99.99 % interval (z = 3.89): a correct hash fails this 1 time in 10,000."""
    return abs(observed - expected) <= 3.89 * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("weight", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_an_ab_split_matches_its_weight(weight):
    config = DeploymentConfig(
        region="us-east", strategy="ab", experiment_id="exp-1", challenger_weight=weight
    )
    assert _within(_share(config), weight, len(CUSTOMERS))


def test_each_canary_step_matches_its_ramp_and_keeps_the_customers_it_had():
    previous: set[str] = set()
    for step, percent in enumerate(deployment.DEFAULT_RAMP):
        config = DeploymentConfig(
            region="eu-west", strategy="canary", experiment_id="canary-7", canary_step=step
        )
        treated = {c for c in CUSTOMERS if config.variant(c) == "challenger"}
        if percent < 100:
            assert _within(len(treated) / len(CUSTOMERS), percent / 100, len(CUSTOMERS))
        else:
            assert treated == set(CUSTOMERS)
        assert previous <= treated, "a ramp step must not move a customer back to the champion"
        previous = treated


def test_assignment_is_sticky_deterministic_and_reshuffled_by_a_new_experiment():
    a = DeploymentConfig(region="us-east", strategy="ab", experiment_id="exp-A", challenger_weight=0.5)
    again = DeploymentConfig(region="us-east", strategy="ab", experiment_id="exp-A", challenger_weight=0.5)
    b = DeploymentConfig(region="us-east", strategy="ab", experiment_id="exp-B", challenger_weight=0.5)
    first = [a.variant(c) for c in CUSTOMERS[:5000]]
    assert first == [a.variant(c) for c in CUSTOMERS[:5000]] == [again.variant(c) for c in CUSTOMERS[:5000]]
    # Independent experiments: agreement ~ 50 %, not 100 % (assignment is not a fixed customer order).
    agree = sum(x == b.variant(c) for x, c in zip(first, CUSTOMERS[:5000], strict=True)) / 5000
    assert _within(agree, 0.5, 5000)
    # Buckets are uniform: each decile holds a tenth.
    deciles = [0] * 10
    for c in CUSTOMERS:
        deciles[int(deployment.bucket("exp-A", c) * 10)] += 1
    assert all(_within(n / len(CUSTOMERS), 0.1, len(CUSTOMERS)) for n in deciles)


def test_champion_and_shadow_always_answer_with_the_champion():
    for strategy in ("champion", "shadow"):
        config = DeploymentConfig(region="us-east", strategy=strategy, experiment_id="x")
        assert _share(config, CUSTOMERS[:2000]) == 0.0
    assert DeploymentConfig(region="us-east", strategy="shadow").scores_challenger
    assert not DeploymentConfig(region="us-east").scores_challenger


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "ab", "challenger_weight": 0.0}, "0 < challenger_weight < 1"),
        ({"strategy": "ab", "challenger_weight": 1.0}, "0 < challenger_weight < 1"),
        ({"strategy": "canary", "canary_ramp": (5, 50, 25)}, "strictly increasing"),
        ({"strategy": "canary", "canary_ramp": (0, 50)}, "strictly increasing"),
        ({"strategy": "canary", "canary_step": 4}, "past the ramp"),
        ({"strategy": "blue-green"}, "strategy"),
    ],
)
def test_invalid_configs_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeploymentConfig(region="us-east", experiment_id="x", **kwargs)


def test_saved_config_round_trips_and_belongs_to_its_region(tmp_path):
    assert deployment.load(tmp_path, "us-east").strategy == "champion"  # nothing written yet
    config = DeploymentConfig(region="us-east", strategy="canary", experiment_id="c1", canary_step=2)
    deployment.save(config, tmp_path)
    assert deployment.load(tmp_path, "us-east") == config
    with pytest.raises(ValueError, match="not eu-west"):
        deployment.load(tmp_path, "eu-west")


def test_ending_an_experiment_says_what_ended_and_why():
    assert deployment.end_experiment(deployment.DeploymentConfig(region="eu-west"), "promoted") is None
    running = deployment.DeploymentConfig(
        region="eu-west", strategy="ab", experiment_id="ab-7", challenger_weight=0.5
    )
    ended = deployment.end_experiment(running, "v4 promoted")
    assert ended is not None and ended.strategy == "champion" and ended.challenger_share == 0.0
    assert (ended.ended_experiment, ended.ended_strategy, ended.ended_reason) == ("ab-7", "ab", "v4 promoted")
    assert ended.experiment_id == "ab-7-ended"
