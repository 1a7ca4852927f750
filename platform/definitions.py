"""The one place where Meridian's assets, checks, jobs, schedules and resources are wired.

Loaded by path from workspace.yaml (there is deliberately no platform/__init__.py: a
package named `platform` would shadow the standard library). The environment is chosen
here, once, from MERIDIAN_PROFILE.
"""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg

from assets.features import feature_view_assets
from assets.governance import (
    cost_report,
    daily_governance_schedule,
    global_merchant_risk,
    governance_catalog,
    governance_job,
    residency_audit,
)
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.jobs import (
    batch_inference,
    daily_inference_schedule,
    daily_regional_schedule,
    ml_training,
    regional_pipeline,
    weekly_retraining_schedule,
)
from assets.ml import (
    fraud_model,
    fraud_model_hyperparameters,
    fraud_model_promotion,
    fraud_predictions,
    rollback_champion,
    training_set,
)
from assets.monitoring import (
    deployment_analysis,
    deployment_analysis_job,
    deployment_analysis_sensor,
    drift_retraining_sensor,
    feature_drift,
    model_performance,
    monitoring_job,
    platform_health,
    predictions_drift_sensor,
    run_failure_alert_sensor,
)
from assets.online import online_features
from assets.replication import (
    REPLICA_ASSETS,
    region_failover,
    region_health_sensor,
    regional_replication,
    replication_sensor,
    replication_status,
)
from assets.serving import deployment_config, serving_stream, serving_stream_job, serving_stream_sensor
from assets.transforms import dbt_project, regional_dbt_models
from meridian.governance import default_policy
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.online_store import OnlineStoreResource
from resources.source import TransactionSourceResource
from resources.topology import RegionTopologyResource
from resources.warehouse import WarehouseDbtResource, dbt_executable

PROFILES = ("local", "production")
# What the production profile cannot run without; checked when the definitions load, so
# `dagster definitions validate` names the missing setting instead of a run failing later.
PRODUCTION_ENV = {
    "MERIDIAN_MLFLOW_TRACKING_URI": "the MLflow tracking server, e.g. http://mlflow:5000",
    "MERIDIAN_REDIS_URL": "the online store, e.g. redis://redis:6379/0",
    "DAGSTER_PG_URL": "the Dagster instance's PostgreSQL (platform/dagster.production.yaml)",
}
DAILY_GROUPS = ("ingestion", "staging", "labels", "features", "online", "inference")
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=24)
)


def classify(spec: dg.AssetSpec) -> dg.AssetSpec:
    """Classification from platform/policies/governance.yaml as a tag and column metadata."""
    found = default_policy().asset_classification(spec.key.path[-1])
    if found is None:
        return spec
    level, columns = found
    return spec.merge_attributes(
        tags={"meridian/classification": level},
        metadata={"column_classification": dg.MetadataValue.json(columns)},
    )


def build_resources(profile: str) -> dict[str, object]:
    """Resources for a deployment profile; asset code never changes between profiles.

    local: SQLite online store, MLflow on SQLite under MERIDIAN_HOME, alerts to a file.
    production: Redis online store, the MLflow tracking server (PostgreSQL backend), the
    dbt target `MERIDIAN_DBT_TARGET` (platform/deploy/dbt/profiles.yml describes the
    distributed engine's), alerts also to MERIDIAN_ALERT_WEBHOOK_URL. The instance
    (PostgreSQL) is platform/dagster.production.yaml, installed in DAGSTER_HOME by
    `meridian.profiles.install_instance_config`.
    """
    if profile not in PROFILES:
        raise ValueError(f"MERIDIAN_PROFILE={profile!r} is not a known profile; choose one of {PROFILES}")
    production = profile == "production"
    if production:
        missing = [f"{name} ({what})" for name, what in PRODUCTION_ENV.items() if not os.environ.get(name)]
        if missing:
            raise ValueError("MERIDIAN_PROFILE=production needs: " + "; ".join(missing))
    return {
        "topology": RegionTopologyResource(path=os.environ.get("MERIDIAN_TOPOLOGY")),
        "lake": RegionalLakeResource(home=os.environ.get("MERIDIAN_HOME")),
        "source": TransactionSourceResource(),
        "dbt": WarehouseDbtResource(
            project_dir=dbt_project,
            profiles_dir=os.environ.get("MERIDIAN_DBT_PROFILES_DIR") or str(dbt_project.profiles_dir),
            dbt_executable=dbt_executable(),
            target=os.environ.get("MERIDIAN_DBT_TARGET", "local"),
        ),
        "online_store": OnlineStoreResource(
            backend="redis" if production else os.environ.get("MERIDIAN_ONLINE_STORE", "sqlite"),
            redis_url=os.environ.get("MERIDIAN_REDIS_URL"),
        ),
        "alerting": AlertingResource(webhook_url=os.environ.get("MERIDIAN_ALERT_WEBHOOK_URL")),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=os.environ.get("MERIDIAN_MLFLOW_TRACKING_URI"),
            ui_url=os.environ.get("MERIDIAN_MLFLOW_UI_URL")
            or os.environ.get("MERIDIAN_MLFLOW_TRACKING_URI")
            or "http://127.0.0.1:5000",
            home=os.environ.get("MERIDIAN_HOME"),
        ),
    }


defs = (
    dg.Definitions(
        assets=[
            transactions_ingestion,
            labels_ingestion,
            regional_dbt_models,
            feature_view_assets,
            online_features,
            training_set,
            fraud_model_hyperparameters,
            fraud_model,
            fraud_model_promotion,
            fraud_predictions,
            deployment_config,
            serving_stream,
            feature_drift,
            model_performance,
            platform_health,
            deployment_analysis,
            *REPLICA_ASSETS,
            replication_status,
            global_merchant_risk,
            residency_audit,
            governance_catalog,
            cost_report,
        ],
        jobs=[
            regional_pipeline,
            ml_training,
            batch_inference,
            rollback_champion,
            serving_stream_job,
            monitoring_job,
            deployment_analysis_job,
            regional_replication,
            region_failover,
            governance_job,
        ],
        sensors=[
            serving_stream_sensor,
            predictions_drift_sensor,
            drift_retraining_sensor,
            run_failure_alert_sensor,
            deployment_analysis_sensor,
            replication_sensor,
            region_health_sensor,
        ],
        schedules=[
            daily_regional_schedule,
            daily_inference_schedule,
            weekly_retraining_schedule,
            daily_governance_schedule,
        ],
        resources=build_resources(os.environ.get("MERIDIAN_PROFILE", "local")),
        executor=dg.in_process_executor,
    )
    .map_resolved_asset_specs(func=classify)
    .map_resolved_asset_specs(
        # The nightly graph lands every day (pipeline at 02:00, scoring at 04:00, drift after):
        # WARN when an asset's newest materialization is a day old, FAIL past 26 hours.
        func=lambda spec: dg.apply_freshness_policy(spec, DAILY_FRESHNESS),
        selection=dg.AssetSelection.groups(*DAILY_GROUPS) | dg.AssetSelection.assets("feature_drift"),
    )
)
