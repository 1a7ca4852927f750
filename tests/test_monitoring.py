"""Drift injected into one region raises its alert and launches its retraining; the other stays quiet."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.definitions_file import load_definitions_module
from assets.drift import feature_drift
from assets.features import feature_view_assets
from assets.inference import fraud_predictions
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.monitoring_sensors import drift_retraining_sensor, predictions_drift_sensor
from assets.performance import model_performance
from assets.platform_health import platform_health
from assets.promotion import fraud_model_promotion
from assets.training import fraud_model, fraud_model_hyperparameters, training_set
from assets.transforms import regional_dbt_models
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.source import TransactionSourceResource
from tests.helpers import trainable_days

pytestmark = pytest.mark.e2e
REGIONS = ("eu-west", "us-east")
DRIFTED = "eu-west"
# The views' warm-up, 6 days of trainable labels, their maturity, then 4 more days: the model
# trains on full windows only, and drift (in one region) starts after everything it saw.
DAYS = trainable_days(6, after=4)
DRIFT_FROM = DAYS[-4]
SCORED = DAYS[-6:]  # two clean days, then four drifted ones (in DRIFTED only)
MATURED = DAYS[-14:-10]  # warm days whose labels have matured by the end of the window


def _resources(home: Path) -> dict[str, object]:
    return {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(
            rows_per_day=600,
            malformed_rate=0.0,
            fraud_rate=0.03,
            drift_regions=[DRIFTED],
            drift_start_day=DRIFT_FROM,
            drift_magnitude=1.0,
        ),
        "mlflow_tracking": MlflowTrackingResource(home=str(home)),
        "alerting": AlertingResource(path=str(home / "alerts" / "alerts.jsonl")),
    }


def _key(region: str, day: str) -> str:
    return str(dg.MultiPartitionKey({"region": region, "day": day}))


def _range(region: str, days) -> dict[str, str]:
    """The tags of one single-run backfill over consecutive `days` of `region`."""
    return {
        ASSET_PARTITION_RANGE_START_TAG: _key(region, days[0]),
        ASSET_PARTITION_RANGE_END_TAG: _key(region, days[-1]),
    }


def test_drift_in_one_region_alerts_and_retrains_that_region_only(tmp_path: Path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    resources = _resources(home)
    # In memory: the ranged runs log ~1,200 planned and materialization events each, which a
    # SQLite file instance commits one by one (a third of this test's time).
    with dg.DagsterInstance.ephemeral() as instance:
        for region in REGIONS:
            pipeline = [transactions_ingestion, labels_ingestion, regional_dbt_models, feature_view_assets]
            tags = {
                ASSET_PARTITION_RANGE_START_TAG: _key(region, DAYS[0]),
                ASSET_PARTITION_RANGE_END_TAG: _key(region, DAYS[-1]),
            }
            assert dg.materialize(pipeline, resources=resources, tags=tags, instance=instance).success
            ml = [training_set, fraud_model_hyperparameters, fraud_model, fraud_model_promotion]
            hp = {
                "fraud_model_hyperparameters": {
                    "config": {"n_trials": 2, "timeout_seconds": 60, "max_rounds": 80}
                }
            }
            assert dg.materialize(
                ml, resources=resources, partition_key=region, run_config={"ops": hp}, instance=instance
            ).success
            # One ranged run over the scored days, as `meridian run` and the daily job score.
            assert dg.materialize(
                [fraud_predictions], resources=resources, tags=_range(region, SCORED), instance=instance
            ).success

        # New predictions → the multi-asset sensor asks for drift of exactly those region-days.
        defs = load_definitions_module().defs

        def tick(sensor, monitored, cursor=None):
            context = dg.build_multi_asset_sensor_context(
                monitored_assets=[monitored],
                instance=instance,
                resources=resources,
                definitions=defs,
                cursor=cursor,
            )
            return sensor.evaluate_tick(context)

        first = tick(predictions_drift_sensor, fraud_predictions.key)
        requests = first.run_requests
        assert sorted(r.partition_key for r in requests) == sorted(
            _key(region, day) for region in REGIONS for day in SCORED
        )
        assert tick(predictions_drift_sensor, fraud_predictions.key, first.cursor).run_requests == []
        for request in requests:
            result = dg.materialize(
                [feature_drift],
                resources=resources,
                partition_key=request.partition_key,
                instance=instance,
                raise_on_error=False,
            )
            assert result.success
            check = result.get_asset_check_evaluations()[0]
            day, region = request.partition_key.split("|")
            if region == DRIFTED and day >= DRIFT_FROM:
                assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
            else:
                # Both directions on the same data: before the drift starts, and in the other
                # region throughout, nothing is an ERROR (full windows: no warm-up artefacts).
                assert check.metadata["worst"].value in ("ok", "warn", "no_data"), (
                    request.partition_key,
                    check,
                )
        by_day = {}
        for region in REGIONS:
            frame = pl.read_parquet(home / "regions" / region / "lake" / "drift" / "day=*" / "*.parquet")
            for day in SCORED:
                rows = frame.filter(pl.col("day") == day)
                by_day[(region, day)] = set(rows.filter(pl.col("status") == "error")["column"])
                assert rows.height >= 20 and rows["reference_rows"].min() > 0
        for day in SCORED:
            if day >= DRIFT_FROM:
                assert {"amount_usd", "is_ecom"} <= by_day[(DRIFTED, day)], (day, by_day[(DRIFTED, day)])
            else:
                assert by_day[(DRIFTED, day)] == set(), (day, by_day[(DRIFTED, day)])
            assert by_day[("us-east", day)] == set(), (day, by_day[("us-east", day)])

        alerts = resources["alerting"].read()
        drift_alerts = [a for a in alerts if a["source"] == "feature_drift"]
        errors = [a for a in drift_alerts if a["severity"] == "ERROR"]
        assert {a["region"] for a in errors} == {DRIFTED}
        assert {a["message"].split(":")[0] for a in errors} == {
            f"{DRIFTED} {d}" for d in SCORED if d >= DRIFT_FROM
        }
        # The clean region may see a WARN on a noisy day (sampling), never an ERROR.
        assert {a["severity"] for a in drift_alerts if a["region"] != DRIFTED} <= {"WARN"}
        drifted_columns = set().union(*(a["details"]["columns"] for a in errors))
        assert "amount_usd" in drifted_columns

        stored = pl.read_parquet(home / "regions" / "us-east" / "lake" / "drift" / "day=*" / "*.parquet")
        assert "error" not in set(stored["status"]) and stored["column"].n_unique() >= 20
        warn_share = (stored["status"] == "warn").mean()
        print(f"us-east, no drift injected: {warn_share:.1%} of column-days WARN, none ERROR")

        # ERROR drift → retraining of that region only; a second evaluation launches nothing.
        retrain_tick = tick(drift_retraining_sensor, feature_drift.key)
        launched = retrain_tick.run_requests
        assert [(r.partition_key, r.tags["meridian/trigger"]) for r in launched] == [(DRIFTED, "drift")]
        again = tick(drift_retraining_sensor, feature_drift.key, retrain_tick.cursor)
        assert again.run_requests == []
        retrain = dg.materialize(
            [training_set, fraud_model_hyperparameters, fraud_model, fraud_model_promotion],
            resources=resources,
            partition_key=DRIFTED,
            run_config={"ops": hp},
            instance=instance,
            tags=launched[0].tags,
        )
        assert retrain.success
        # More ERROR drift of the same region inside the debounce window: not launched again.
        result = dg.materialize(
            [feature_drift], resources=resources, partition_key=_key(DRIFTED, DAYS[-1]), instance=instance
        )
        assert result.success
        assert tick(drift_retraining_sensor, feature_drift.key, again.cursor).run_requests == []
        retrain_alerts = [a for a in resources["alerting"].read() if a["source"] == "drift_retraining_sensor"]
        assert [a["region"] for a in retrain_alerts] == [DRIFTED]

        # Performance once labels mature: days whose chargeback window has passed.
        assert dg.materialize(
            [fraud_predictions], resources=resources, tags=_range("us-east", MATURED), instance=instance
        ).success
        result = dg.materialize(
            [model_performance], resources=resources, partition_key="us-east", instance=instance
        )
        assert result.success
        check = result.get_asset_check_evaluations()[0]
        assert check.passed and check.metadata["rows"].value == 4 * 600
        plot = result.asset_materializations_for_node("model_performance")[0].metadata["plot"].value
        assert plot.startswith("![PR-AUC by day and model version](data:image/png;base64,")
        assert 0 < check.metadata["live_pr_auc"].value <= 1
        stored = pl.read_parquet(
            home / "regions" / "us-east" / "lake" / "performance" / "day=*" / "*.parquet"
        )
        assert sorted(stored["day"].unique()) == MATURED and set(stored["model_version"]) == {1}
        # The global view: every active region, drift and alerts where they happened.
        health = dg.materialize([platform_health], resources=resources, instance=instance)
        assert health.success
        import json

        view = {
            r["region"]: r for r in json.loads((home / "platform" / "health.json").read_text())["regions"]
        }
        assert set(view) == {"us-east", "eu-west", "ap-southeast"}
        assert view[DRIFTED]["drift"] == "error" and view[DRIFTED]["alerts_error_24h"] >= 1
        assert view["us-east"]["drift"] in ("ok", "warn") and view["us-east"]["alerts_error_24h"] == 0
        assert view["ap-southeast"]["latest_lake_day"] == "none" and view["us-east"]["champion_version"] == 1

        # What the service served is checked too: decision-log entries carrying the model's
        # inputs as scored (here: the day's real features, as the service would have logged
        # them) go through the micro-batch's decision table into `feature_drift`.
        import duckdb
        import orjson

        from assets.ml_shared import load_booster
        from meridian import modeling
        from meridian.batch_scoring import prediction_features
        from meridian.lake import partition_file, write_parquet_atomic
        from meridian.paths import region_paths
        from meridian.served import served_rows
        from meridian.stream_log import StreamBatch
        from meridian.topology import load_topology

        for region in REGIONS:
            where = load_topology().region(region)
            paths = region_paths(where, home)
            booster = load_booster(resources["mlflow_tracking"], region, 1)
            with duckdb.connect(str(paths.warehouse), read_only=True) as con:
                frame = prediction_features(con, where, DAYS[-1])
            columns = booster.feature_name()
            scores = booster.predict(modeling.design_matrix(frame, columns))
            entries = [
                {
                    "request_id": f"r-{i}",
                    "served_at": f"{DAYS[-1]}T12:00:00+00:00",
                    "transaction_id": row["transaction_id"],
                    "transaction": {
                        "transaction_id": row["transaction_id"],
                        "customer_id": row["customer_id"],
                        "merchant_id": "m-1",
                        "amount": 10.0,
                        "currency": where.currencies[0],
                        "channel": "pos",
                        "country": where.countries[0],
                        "event_time": f"{DAYS[-1]}T11:59:00+00:00",
                    },
                    "strategy": "champion",
                    "experiment_id": "none",
                    "challenger_share": 0.0,
                    "variant": "champion",
                    "model_version": 1,
                    "score": float(scores[i]),
                    "latency_ms": 1.0,
                    "feature_versions": {},
                    "features": orjson.loads(orjson.dumps({c: row[c] for c in columns})),
                    "features_complete": True,
                }
                for i, row in enumerate(frame.iter_rows(named=True))
            ]
            served = served_rows(StreamBatch(entries, [("test", i) for i in range(len(entries))], {}, []))
            assert served.quarantined.is_empty()
            decisions = served.decisions.drop("day")
            write_parquet_atomic(decisions, partition_file(paths.table("scoring_decisions"), DAYS[-1]))
            assert dg.materialize(
                [feature_drift], resources=resources, partition_key=_key(region, DAYS[-1]), instance=instance
            ).success
            drift = pl.read_parquet(partition_file(paths.table("drift"), DAYS[-1]))
            served = drift.filter(pl.col("column").str.ends_with(" (served)"))
            assert served.height == len(columns) + 1  # every input and the score
            in_error = set(served.filter(pl.col("status") == "error")["column"])
            if region == DRIFTED:
                assert "amount_usd (served)" in in_error
            else:
                assert not in_error, served.filter(pl.col("status") != "ok")

        # A champion registered without its test PR-AUC cannot be judged: the check fails and says so
        # (last: its ERROR alert would show in the health view above).
        client = resources["mlflow_tracking"].client()
        client.delete_model_version_tag("fraud-us-east", "1", "test_pr_auc")
        result = dg.materialize(
            [model_performance],
            resources=resources,
            partition_key="us-east",
            instance=instance,
            raise_on_error=False,
        )
        check = result.get_asset_check_evaluations()[0]
        assert not check.passed and "no valid test_pr_auc tag" in check.metadata["reason"].value
        client.set_model_version_tag(
            "fraud-us-east", "1", "test_pr_auc", f"{check.metadata['live_pr_auc'].value}"
        )
