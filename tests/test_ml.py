"""The ML lifecycle: promotion rule, registry, MLflow tracking, train → promote → predict.

Why one module of ~480 lines: the lifecycle tests share one region's built lake (the module
fixture); each copies it before it trains or promotes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import lightgbm as lgb
import numpy as np
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.definitions_file import load_definitions_module
from assets.features import feature_view_assets
from assets.inference import fraud_predictions
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.promotion import PromotionConfig, fraud_model_promotion, rollback_champion
from assets.training import fraud_model, fraud_model_hyperparameters, training_set
from assets.transforms import regional_dbt_models
from meridian import modeling, registry
from meridian.lake_tables import LakeLocation
from meridian.paths import REPO_ROOT
from meridian.promotion import decide
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource, MlflowUnavailable
from resources.source import TransactionSourceResource
from tests.helpers import trainable_days

REGION = "us-east"
# The views' warm-up, 6 days of matured, full-window labels, and their maturity window.
DAYS = trainable_days(6)
PIPELINE = [transactions_ingestion, labels_ingestion, regional_dbt_models, feature_view_assets]
ML = [training_set, fraud_model_hyperparameters, fraud_model, fraud_model_promotion]
TUNING = {
    "fraud_model_hyperparameters": {"config": {"n_trials": 4, "timeout_seconds": 60, "max_rounds": 150}}
}


def _resources(home: Path, **overrides) -> dict[str, object]:
    return {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=2500, malformed_rate=0.0, fraud_rate=0.02),
        "mlflow_tracking": MlflowTrackingResource(home=str(home)),
        **overrides,
    }


def _ranged(first: str, last: str) -> dict[str, str]:
    return {
        ASSET_PARTITION_RANGE_START_TAG: str(dg.MultiPartitionKey({"region": REGION, "day": first})),
        ASSET_PARTITION_RANGE_END_TAG: str(dg.MultiPartitionKey({"region": REGION, "day": last})),
    }


def _train(home: Path, run_config: dict | None = None, **overrides) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ML,
        resources=_resources(home, **overrides),
        partition_key=REGION,
        run_config={"ops": {**TUNING, **(run_config or {})}},
        raise_on_error=False,
    )


def _score(home: Path, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [fraud_predictions], resources=_resources(home), tags=_ranged(first, last), raise_on_error=False
    )


def _client(home: Path):
    return MlflowTrackingResource(home=str(home)).client()


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def lake_home(tmp_path_factory) -> Path:
    """One region's pipeline over 16 days, shared by the tests below (each copies what it changes)."""
    home = tmp_path_factory.mktemp("ml") / "home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MERIDIAN_HOME", str(home))
        result = dg.materialize(
            PIPELINE, resources=_resources(home), tags=_ranged(DAYS[0], DAYS[-1]), raise_on_error=False
        )
    assert result.success
    return home


@pytest.fixture
def home(lake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the shared lake, so tests that train and promote do not see each other."""
    import shutil

    copy = tmp_path / "home"
    shutil.copytree(lake_home, copy, ignore=shutil.ignore_patterns("*.lock"))
    monkeypatch.setenv("MERIDIAN_HOME", str(copy))
    monkeypatch.setenv("DAGSTER_HOME", str(copy / "dagster"))
    return copy


# ---------------------------------------------------------------- the promotion rule

BASE = {"pr_auc": 0.60, "ece": 0.010}


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted", "why"),
    [
        (BASE, None, True, "no champion yet"),
        ({"pr_auc": 0.62, "ece": 0.010}, BASE, True, "gain +0.0200"),
        ({"pr_auc": 0.603, "ece": 0.005}, BASE, False, "below the required margin"),
        ({"pr_auc": 0.70, "ece": 0.020}, BASE, False, "calibration is worse"),
        ({"pr_auc": 0.70, "ece": 0.014}, BASE, True, "within tolerance"),
        ({"pr_auc": 0.55, "ece": 0.001}, BASE, False, "below the required margin"),
    ],
)
def test_promotion_needs_a_margin_on_pr_auc_and_no_worse_calibration(challenger, champion, promoted, why):
    decision, reason = decide(
        challenger, champion, PromotionConfig(min_pr_auc_gain=0.005, calibration_tolerance=0.005)
    )
    assert decision is promoted
    assert why in reason


def test_calibration_error_is_zero_for_calibrated_scores_and_large_for_overconfident_ones():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, 200_000)
    y = (rng.uniform(size=p.size) < p).astype(np.int8)
    assert modeling.expected_calibration_error(y, p) < 0.005
    assert modeling.expected_calibration_error(y, np.clip(p * 4, 0, 1)) > 0.1
    metrics = modeling.evaluate(y, p)
    assert 0.5 < metrics["roc_auc"] < 1 and metrics["positives"] == y.sum()
    with pytest.raises(ValueError, match="both classes"):
        modeling.evaluate(np.zeros(10), np.zeros(10))


# ---------------------------------------------------------------- registry


def _log_tiny_model(experiment: str, seed: int) -> str:
    import mlflow

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(400, 3))
    booster = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(x, x[:, 0] > 0), 5
    )
    mlflow.set_experiment(experiment_id=experiment)
    with mlflow.start_run():
        requirements = modeling.model_pip_requirements()
        return mlflow.lightgbm.log_model(booster, name="model", pip_requirements=requirements).model_uri


def test_registry_promotes_rolls_back_and_discards_half_registered_versions(tmp_path: Path):
    resource = MlflowTrackingResource(home=str(tmp_path))
    client = resource.client()
    region = "eu-west"
    name = registry.model_name(region)
    experiment = resource.ensure_experiment(region, (tmp_path / "artifacts").as_uri())
    versions = [
        registry.register_challenger(client, region, _log_tiny_model(experiment, i), "r", {})
        for i in range(3)
    ]
    assert versions == [1, 2, 3]
    assert registry.alias_version(client, name, registry.CHALLENGER) == 3
    assert registry.alias_version(client, name, registry.CHAMPION) is None
    with pytest.raises(registry.RegistryError, match="no champion"):
        registry.rollback(client, region, "run")

    registry.promote(client, region, 1, "first", "run-1")
    with pytest.raises(registry.RegistryError, match="only champion"):
        registry.rollback(client, region, "run")
    registry.promote(client, region, 2, "better", "run-2")
    registry.promote(client, region, 3, "better still", "run-3")
    assert registry.alias_version(client, name, registry.CHAMPION) == 3
    assert (
        registry.alias_version(client, name, registry.CHALLENGER) is None
    )  # promoted: no longer a challenger

    change = registry.rollback(client, region, "run-4")
    assert (change.previous, change.current) == (3, 2)
    change = registry.rollback(client, region, "run-5")  # a second rollback goes further back
    assert (change.previous, change.current) == (2, 1)
    with pytest.raises(registry.RegistryError, match="never been champion"):
        registry.rollback(client, region, "run-6", to_version=3)  # 3 was popped off the history

    # A version left "registering" by a dead run is discarded by the next registration.
    import mlflow

    orphan = mlflow.register_model(
        _log_tiny_model(experiment, 9), name, tags={registry.STATUS_TAG: "registering"}
    )
    assert registry.discard_unfinished(client, name) == [int(orphan.version)]
    assert {int(v.version) for v in client.search_model_versions(f"name = '{name}'")} == {1, 2, 3}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_mlflow_is_a_clear_error_before_any_work(home: Path):
    down = MlflowTrackingResource(tracking_uri=f"http://127.0.0.1:{_free_port()}", home=str(home))
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable, match="unreachable"):
        down.preflight()
    assert time.monotonic() - started < 10
    result = _train(home, mlflow_tracking=down)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "fraud_model_hyperparameters"
    assert "is unreachable" in str(failure.event_specific_data.error)
    assert not (home / "regions" / REGION / "lake" / "tuning").exists()  # nothing was tuned or written


# ---------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_train_promote_predict_then_reject_promote_and_roll_back(home: Path):
    import mlflow

    first = _train(home)
    assert first.success
    trained = _metadata(first, "fraud_model")
    assert trained["model_version"] == 1 and trained["registered_as"] == "challenger"
    assert 0.5 < trained["test_roc_auc"] <= 1 and 0 < trained["test_pr_auc"] <= 1
    assert (
        trained["curves"].startswith("![ROC and PR curves") and "data:image/png;base64," in trained["curves"]
    )
    assert trained["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
    promoted = _metadata(first, "fraud_model_promotion")
    assert promoted["decision"] == "promoted" and promoted["first_model"] is True
    assert "no champion yet" in promoted["reason"]
    dataset = _metadata(first, "training_set")
    assert dataset["rows"] > 0 and 0 < dataset["positive_rate"] < 0.2
    assert set(dataset["feature_view_versions"]) == {"customer_spend", "merchant_risk"}

    # The MLflow run: Dagster run id, lineage, per-iteration metrics, curves, dataset, registered model.
    client = _client(home)
    run = client.get_run(trained["mlflow_run"].rsplit("/", 1)[1])
    assert run.data.tags["dagster_run_id"] == first.run_id and run.data.tags["region"] == REGION
    # Promotion finds the version its own run registered, whatever the alias points at since.
    assert registry.version_registered_by_run(client, registry.model_name(REGION), first.run_id) == 1
    assert registry.version_registered_by_run(client, registry.model_name(REGION), "another-run") is None
    assert run.data.params["dataset_version"] == dataset["dataset_version"]
    assert len(client.get_metric_history(run.info.run_id, "validation_average_precision")) > 5
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "curves")
    }
    assert {"feature_importance.csv", "curves/roc_pr_test.png", "training_set_manifest.json"} <= artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == dataset["dataset_version"]
    version = client.get_model_version(registry.model_name(REGION), "1")
    assert version.tags[registry.STATUS_TAG] == "ready"
    model_info = mlflow.models.get_model_info(f"models:/{registry.model_name(REGION)}/1")
    assert model_info.signature is not None and model_info.saved_input_example_info is not None
    # Artifacts stay in the region's own storage root (residency).
    assert (home / "regions" / REGION / "mlflow-artifacts").is_dir()

    # Batch inference: every transaction of the day, with the champion's version; idempotent.
    scored = _score(home, DAYS[-2], DAYS[-1])
    assert scored.success
    paths = [
        home / "regions" / REGION / "lake" / "predictions" / f"day={d}" / "data.parquet" for d in DAYS[-2:]
    ]
    predictions = pl.read_parquet(paths)
    raw = (
        LakeLocation.local(home / "regions" / REGION / "lake")
        .table("raw_transactions")
        .read(where={"day": DAYS[-2:], "origin": "source"})
    )
    assert predictions.height == raw.height
    assert set(predictions["transaction_id"]) == set(raw["transaction_id"])
    assert predictions["score"].is_between(0, 1).all() and predictions[
        "model_version"
    ].unique().to_list() == [1]
    assert predictions["customer_spend_view_version"].n_unique() == 1
    before = {p: p.read_bytes() for p in paths}
    assert _score(home, DAYS[-2], DAYS[-1]).success
    assert pl.read_parquet(paths).sort("transaction_id").equals(predictions.sort("transaction_id"))
    assert all(p.read_bytes() == before[p] for p in paths)  # a re-run rewrites the same bytes

    # A challenger that must win by an impossible margin is not promoted...
    second = _train(home, {"fraud_model_promotion": {"config": {"min_pr_auc_gain": 1.0}}})
    assert second.success
    kept = _metadata(second, "fraud_model_promotion")
    assert kept["decision"] == "kept champion" and kept["champion_version"] == 1
    assert "below the required margin" in kept["reason"]
    assert registry.alias_version(client, registry.model_name(REGION), registry.CHALLENGER) == 2
    # ... and one that only needs to match the champion is. The shadow test of v2 running
    # meanwhile ends with the promotion, explicitly, on the live config and its DR copy.
    from meridian import deployment, dr
    from meridian.topology import load_topology

    topology = load_topology()
    region_root = home / "regions" / REGION

    def live_and_dr() -> tuple[deployment.DeploymentConfig, dict]:
        rep = dr.replica(topology, home, REGION, "deployment_config")
        return deployment.load(region_root, REGION), json.loads(
            rep.resolve("deployment/config.json").read_bytes()
        )

    dr.publish_deployment(
        topology,
        home,
        REGION,
        deployment.DeploymentConfig(region=REGION, strategy="shadow", experiment_id="sh-1"),
    )
    third = _train(home, {"fraud_model_promotion": {"config": {"min_pr_auc_gain": -1.0}}})
    promoted = _metadata(third, "fraud_model_promotion")
    assert promoted["champion_version"] == 3
    assert (
        promoted["experiment"]
        == "shadow experiment sh-1 ended: v3 promoted to champion by fraud_model_promotion"
    )
    live, dr_copy = live_and_dr()
    assert (live.strategy, live.ended_experiment, live.ended_strategy) == ("champion", "sh-1", "shadow")
    assert dr_copy == json.loads(live.model_dump_json())
    # A canary running when the champion is rolled back ends too, and the withdrawn model
    # keeps an alias to be tried again.
    dr.publish_deployment(
        topology,
        home,
        REGION,
        deployment.DeploymentConfig(region=REGION, strategy="canary", experiment_id="can-1"),
    )

    # Rollback is one job (here launched by the CLI): back to version 1, and scoring follows.
    from cli.main import main

    assert main(["rollback", "--region", "mars", "--home", str(home)]) == 2
    bad = rollback_champion.execute_in_process(
        resources=_resources(home),
        run_config={"ops": {"rollback_champion_op": {"config": {"region": REGION, "to_version": 2}}}},
        raise_on_error=False,
    )
    assert not bad.success  # version 2 was never champion
    assert registry.alias_version(client, registry.model_name(REGION), registry.CHAMPION) == 3
    assert main(["rollback", "--region", REGION, "--home", str(home)]) == 0
    assert registry.alias_version(client, registry.model_name(REGION), registry.CHAMPION) == 1
    assert registry.alias_version(client, registry.model_name(REGION), registry.ROLLED_BACK) == 3
    live, dr_copy = live_and_dr()
    assert (live.strategy, live.ended_experiment, live.ended_reason) == (
        "champion",
        "can-1",
        "champion rolled back v3 → v1",
    )
    assert dr_copy == json.loads(live.model_dump_json())
    assert _score(home, DAYS[-1], DAYS[-1]).success
    assert pl.read_parquet(paths[-1])["model_version"].unique().to_list() == [1]
    decisions = sorted((home / "regions" / REGION / "lake" / "model_decisions").glob("*.json"))
    assert [json.loads(p.read_text())["decision"] for p in decisions] == [
        "promoted",
        "kept champion",
        "promoted",
        "rolled back",
    ]


@pytest.mark.e2e
def test_a_training_run_killed_midway_leaves_the_registry_as_it_was(home: Path):
    assert _train(home).success  # v1: champion
    client = _client(home)
    name = registry.model_name(REGION)
    script = (
        "import dagster as dg\n"
        "from assets.definitions_file import load_definitions_module\n"
        "m = load_definitions_module()\n"
        f"dg.materialize([m.fraud_model], resources=m.build_resources('local'), partition_key={REGION!r})\n"
    )
    env = {**os.environ, "MERIDIAN_FAILPOINT": "registry.version_created", "PYTHONPATH": str(REPO_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    # The version was created, then the process died: aliases are untouched and nothing serves it.
    assert registry.alias_version(client, name, registry.CHAMPION) == 1
    assert registry.alias_version(client, name, registry.CHALLENGER) is None
    [orphan] = client.search_model_versions(
        f"name = '{name}' and tags.`{registry.STATUS_TAG}` = 'registering'"
    )
    assert int(orphan.version) == 2
    # The killed process's MLflow run was left RUNNING (before: forever).
    experiment = client.get_experiment_by_name(f"fraud-{REGION}").experiment_id
    [abandoned] = client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'")
    assert _score(home, DAYS[-1], DAYS[-1]).success  # still the champion
    # The next training run discards the orphan, marks the abandoned run FAILED, registers cleanly.
    again = _train(home, {"fraud_model_promotion": {"config": {"min_pr_auc_gain": 1.0}}})
    assert again.success
    left = client.get_run(abandoned.info.run_id)
    assert left.info.status == "FAILED" and "is gone" in left.data.tags["meridian.abandoned"]
    assert client.search_runs([experiment], filter_string="attributes.status = 'RUNNING'") == []
    assert _metadata(again, "fraud_model")["model_version"] == 3
    assert {int(v.version) for v in client.search_model_versions(f"name = '{name}'")} == {1, 3}
    assert registry.alias_version(client, name, registry.CHAMPION) == 1


def test_two_first_runs_on_a_fresh_root_both_initialise_mlflow(tmp_path: Path):
    """Before: two processes touching a new SQLite tracking store at once collided on schema
    creation ("table ... already exists") and one failed with "MLflow backend did not answer".

    Three processes import MLflow, then wait at a barrier (a file appearing) so that their
    first touches of the fresh store start within milliseconds of each other, not at the
    chance moments their imports end."""
    script = (
        "import os, sys, time\n"
        "from resources.mlflow import MlflowTrackingResource\n"
        "open(sys.argv[2] + '.' + str(os.getpid()), 'w').close()\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "MlflowTrackingResource(home=sys.argv[1]).preflight()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    home, go = tmp_path / "fresh", tmp_path / "go"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(home), str(go)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < len(runs):  # every process imported and waits
        assert time.monotonic() < deadline and all(run.poll() is None for run in runs), [
            run.stderr.read()[-1500:] for run in runs if run.poll() is not None
        ]
        time.sleep(0.05)
    go.touch()
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert all(code == 0 for code, _ in results), [err[-1500:] for code, err in results if code]
    assert (home / "mlflow" / "mlflow.db").exists()


def test_days_retrieved_together_equal_each_day_retrieved_alone(lake_home: Path, monkeypatch):
    """Batch scoring and drift retrieve a run of days in one point-in-time query, split by day:
    the rows, columns and values equal those of each day's own query — across a gap in the
    days, a day with no transactions, and runs cut by the row budget."""
    import duckdb

    from meridian import batch_scoring
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    region = load_topology().region(REGION)
    wanted = [*DAYS[-6:-3], DAYS[-1], "2031-01-01"]  # a gap, then a day the lake has no rows of
    with duckdb.connect(str(region_paths(region, lake_home).warehouse), read_only=True) as con:
        alone = {day: batch_scoring.prediction_features(con, region, day) for day in wanted}
        for budget in (batch_scoring.ROWS_PER_RETRIEVAL, 3000):  # 3000: about one day per query
            monkeypatch.setattr(batch_scoring, "ROWS_PER_RETRIEVAL", budget)
            together = list(batch_scoring.prediction_features_by_day(con, region, list(reversed(wanted))))
            assert [day for day, _ in together] == sorted(wanted)
            for day, frame in together:
                expected = alone[day].sort("transaction_id")
                assert frame.sort("transaction_id").equals(expected), (budget, day)
                assert frame.height == (0 if day == "2031-01-01" else expected.height)
    assert alone[DAYS[-1]].height > 2000 and alone["2031-01-01"].is_empty()
