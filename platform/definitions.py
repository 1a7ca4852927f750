"""The one place where Meridian's assets, checks, jobs, schedules and resources are wired.

Loaded by path from workspace.yaml (there is deliberately no platform/__init__.py: a
package named `platform` would shadow the standard library). The environment is chosen
here, once, from MERIDIAN_PROFILE.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import dagster as dg
from dagster_shared.utils.warnings import PreviewWarning

from assets.catalog import governance_catalog
from assets.checks.inference import fraud_predictions_stored_scores
from assets.checks.ingestion import raw_transactions_stored_contract
from assets.cost import cost_report
from assets.deployment_analysis import deployment_analysis, deployment_analysis_job
from assets.drift import feature_drift, monitoring_job
from assets.failover import region_failover, region_health_sensor
from assets.features import feature_view_assets
from assets.governance import daily_governance_schedule, governance_job
from assets.inference import fraud_predictions
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.jobs import (
    batch_inference,
    daily_inference_schedule,
    daily_regional_schedule,
    ml_training,
    regional_pipeline,
    weekly_retraining_schedule,
)
from assets.landing_sensor import landing_sensor
from assets.monitoring_sensors import (
    deployment_analysis_sensor,
    drift_retraining_sensor,
    predictions_drift_sensor,
    run_failure_alert_sensor,
)
from assets.online import online_features
from assets.performance import model_performance, performance_job
from assets.platform_health import platform_health
from assets.promotion import fraud_model_promotion, rollback_champion
from assets.replication import REPLICA_ASSETS, regional_replication, replication_sensor
from assets.replication_status import replication_status
from assets.residency import residency_audit
from assets.serving import deployment_config, serving_stream, serving_stream_job, serving_stream_sensor
from assets.sharing import global_merchant_risk
from assets.training import fraud_model, fraud_model_hyperparameters, training_set
from assets.transforms import dbt_project, regional_dbt_models
from meridian import artifact_store
from meridian import settings as meridian_settings
from meridian.governance import default_policy
from meridian.object_store import landing_location
from meridian.topology import load_topology
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.online_store import OnlineStoreResource
from resources.source import TransactionSourceResource
from resources.topology import RegionTopologyResource
from resources.warehouse import WarehouseDbtResource, dbt_executable

PROFILES = meridian_settings.PROFILES
PRODUCTION_ENV = meridian_settings.PRODUCTION_REQUIRED
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


# Declarative automation runs in development too (Dagster's default sensor for it is off):
# platform_health refreshes when drift or performance lands (eager), model_performance on
# its morning cron. The main job leaves both up to date, so a first `dagster dev` launches
# nothing for them until new data lands.
AUTOMATION_SENSOR = dg.AutomationConditionSensorDefinition(
    "meridian_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions (platform_health eager, model_performance cron).",
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
    config = meridian_settings.settings({**os.environ, "MERIDIAN_PROFILE": profile})
    if config.production:
        config.require_production_settings()
    # A region whose landing zone is on object storage needs its endpoint's credentials: a
    # missing one is named now, when the definitions load, not when a file arrives.
    topology = load_topology(config.topology_path)
    for region in topology.active_region_names:
        landing_location(region)
    artifact_store.check_settings(topology)  # each zone's MLflow artifact bucket, and who reaches it
    return {
        "topology": RegionTopologyResource(path=config.topology_path),
        "lake": RegionalLakeResource(home=config.home_override),
        "source": TransactionSourceResource(),
        "dbt": WarehouseDbtResource(
            project_dir=dbt_project,
            profiles_dir=config.dbt_profiles_dir or str(dbt_project.profiles_dir),
            dbt_executable=dbt_executable(),
            target=config.dbt_target,
        ),
        "online_store": OnlineStoreResource.from_settings(config, topology),
        "alerting": AlertingResource(webhook_url=config.alert_webhook_url),
        "mlflow_tracking": MlflowTrackingResource(
            tracking_uri=config.mlflow_tracking_uri, ui_url=config.mlflow_ui_url, home=config.home_override
        ),
    }


def build_executor(profile: str) -> dg.ExecutorDefinition:
    """How a run executes its steps, per profile (MERIDIAN_EXECUTOR overrides).

    local: in one process (the embedded default: one machine, one writer per warehouse).
    production: `k8s_job_executor` (dagster-k8s), each step a Kubernetes Job on its region's
    node pool with the CPU and memory of `compute:` in platform/regions.yaml
    (instance/k8s_executor.py); Dagster validates those settings when the definitions load.
    """
    config = meridian_settings.settings({**os.environ, "MERIDIAN_PROFILE": profile})
    if config.executor == "k8s":
        from instance.k8s_executor import regional_k8s_job_executor
        from meridian.placement import step_placements

        return regional_k8s_job_executor(step_placements(load_topology(config.topology_path)))
    return dg.in_process_executor


def with_policies(definitions: dg.Definitions) -> dg.Definitions:
    """Policy applied once to every spec: classification, and freshness on the daily graph.

    `Definitions.map_resolved_asset_specs` is a Dagster preview API; its warning would print on
    every load (four times in the main job's console), so it is silenced for these calls only.
    The nightly graph lands every day (pipeline at 02:00, scoring at 04:00, drift after): WARN
    when an asset's newest materialization is a day old, FAIL past 26 hours.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PreviewWarning)
        return definitions.map_resolved_asset_specs(func=classify).map_resolved_asset_specs(
            func=lambda spec: dg.apply_freshness_policy(spec, DAILY_FRESHNESS),
            selection=dg.AssetSelection.groups(*DAILY_GROUPS) | dg.AssetSelection.assets("feature_drift"),
        )


defs = with_policies(
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
        asset_checks=[raw_transactions_stored_contract, fraud_predictions_stored_scores],
        jobs=[
            regional_pipeline,
            ml_training,
            batch_inference,
            rollback_champion,
            serving_stream_job,
            monitoring_job,
            performance_job,
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
            landing_sensor,
            AUTOMATION_SENSOR,
        ],
        schedules=[
            daily_regional_schedule,
            daily_inference_schedule,
            weekly_retraining_schedule,
            daily_governance_schedule,
        ],
        resources=build_resources(meridian_settings.settings().profile),
        executor=build_executor(meridian_settings.settings().profile),
    )
)
