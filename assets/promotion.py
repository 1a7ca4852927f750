"""Promotion of a region's challenger to champion (meridian.promotion's rule), and the one-job rollback.

Each decision is written with its evidence to `model_decisions/<timestamp>.json` in the lake.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from assets.ml_shared import (
    ML_GROUP,
    OWNERS,
    current_training_set,
    load_booster,
    load_training_frame,
    partition_region,
    sync_registry_replica,
    write_json,
)
from assets.partitions import REGION_PARTITIONS
from assets.training import fraud_model
from meridian import modeling, registry
from meridian.locks import file_lock
from meridian.promotion import decide
from meridian.report import markdown_table
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


class PromotionConfig(dg.Config):
    # The challenger must beat the champion's test PR-AUC by this much ...
    min_pr_auc_gain: float = Field(default=0.005, ge=-1, le=1, allow_inf_nan=False)
    # ... and its ECE may exceed the champion's by at most this.
    calibration_tolerance: float = Field(default=0.005, ge=0, le=1, allow_inf_nan=False)


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[fraud_model],
    group_name=ML_GROUP,
    owners=OWNERS,
    kinds={"mlflow"},
    description="Compares the challenger with the champion on the same held-out (test) split and "
    "moves the `champion` alias when the challenger wins by the configured margin.",
)
def fraud_model_promotion(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    region = partition_region(context)
    paths = lake.paths(topology.load(), region)
    mlflow_tracking.preflight()
    client = mlflow_tracking.client()
    name = registry.model_name(region)
    challenger_v = registry.alias_version(client, name, registry.CHALLENGER)
    # The version this very run registered, if it trained one: another training of the region
    # that moved the alias meanwhile must not get its model promoted on this run's evidence.
    own = registry.version_registered_by_run(client, name, context.run_id)
    if own is not None and own != challenger_v:
        context.log.warning(
            f"{name}: the challenger alias points at v{challenger_v}, registered by another run; "
            f"this run evaluates its own v{own}"
        )
        challenger_v = own
    champion_v = registry.alias_version(client, name, registry.CHAMPION)
    if challenger_v is None:
        return dg.MaterializeResult(
            metadata={
                "decision": "no challenger",
                "reason": f"{name} has no challenger: the champion (v{champion_v}) stays; train a new model first",
                "champion_version": champion_v or 0,
            }
        )
    manifest = current_training_set(paths)
    test = load_training_frame(manifest).filter(pl.col("split") == "test")
    y = test["label"].to_numpy()
    evidence: dict[str, dict[str, float] | None] = {}
    for role, version in (("challenger", challenger_v), ("champion", champion_v)):
        if version is None:
            evidence[role] = None
            continue
        booster = load_booster(mlflow_tracking, region, version)
        missing = [c for c in booster.feature_name() if c not in test.columns]
        if missing:
            if role == "challenger":
                raise dg.Failure(
                    f"challenger v{version} needs columns the current training set lacks: {missing}"
                )
            evidence[role] = None
            context.log.warning(
                f"champion v{version} needs retired feature columns {missing}; it cannot be compared"
            )
            continue
        scores = booster.predict(modeling.design_matrix(test, booster.feature_name()))
        evidence[role] = modeling.evaluate(y, scores)
    promote, reason = decide(evidence["challenger"], evidence["champion"], config)
    if champion_v is not None and evidence["champion"] is None:
        reason = f"champion v{champion_v} cannot be scored on the current feature views; " + reason
    if promote:
        with file_lock(paths.root / "registry.lock"):
            change = registry.promote(client, region, challenger_v, reason, context.run_id)
        decision = "promoted"
        replicated = sync_registry_replica(topology.load(), lake, client, region)
        replicated["experiment"] = _end_running_experiment(
            topology.load(), lake, region, f"v{challenger_v} promoted to champion by fraud_model_promotion"
        )
    else:
        change = None
        decision = "kept champion"
        replicated = {}
    at = datetime.now(UTC)
    record = {
        "region": region,
        "decision": decision,
        "reason": reason,
        "challenger_version": challenger_v,
        "champion_version_before": champion_v,
        "champion_version_after": change.current if change else champion_v,
        "evaluated_on": {
            "dataset_version": manifest["dataset_version"],
            "split": "test",
            "rows": test.height,
            # The challenger normally trained on this very dataset, so its test split is unseen.
            "challenger_trained_on": client.get_model_version(name, str(challenger_v)).tags.get(
                "dataset_version", "unknown"
            ),
        },
        "config": config.model_dump(),
        "evidence": evidence,
        "dagster_run_id": context.run_id,
        "at": at.isoformat(),
    }
    write_json(record, paths.table("model_decisions") / f"{at:%Y%m%dT%H%M%S%f}.json")
    rows = [
        {"model": role, "version": v, **{k: round(m[k], 5) for k in ("pr_auc", "roc_auc", "ece", "brier")}}
        for role, v in (("challenger", challenger_v), ("champion", champion_v))
        if (m := evidence.get(role)) is not None
    ]
    return dg.MaterializeResult(
        metadata={
            "decision": decision,
            "reason": reason,
            **replicated,
            "first_model": champion_v is None,
            "champion_version": record["champion_version_after"],
            "challenger_version": challenger_v,
            "evidence": dg.MetadataValue.md(markdown_table(rows)),
            "evaluated_on": dg.MetadataValue.json(record["evaluated_on"]),
            "rule": dg.MetadataValue.json(config.model_dump()),
            "mlflow_model": dg.MetadataValue.url(
                mlflow_tracking.model_url(name, record["champion_version_after"])
            ),
        }
    )


def _end_running_experiment(topo, lake: RegionalLakeResource, region: str, reason: str) -> str:
    """End the region's A/B test, canary or shadow after its models changed (through the one
    synchronous DR write of the deployment config); what happened, for the metadata."""
    from meridian import deployment, dr

    current = deployment.load(lake.paths(topo, region).root, region)
    ended = deployment.end_experiment(current, reason)
    if ended is None:
        return "no experiment was running"
    dr.publish_deployment(topo, lake.root(), region, ended)
    return f"{current.strategy} experiment {current.experiment_id} ended: {reason}"


class RollbackConfig(dg.Config):
    region: str
    to_version: int | None = None  # default: the champion before the current one


@dg.op(description="Move `champion` back to the previous champion of the region's registered model.")
def rollback_champion_op(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> None:
    topo = topology.load()
    if config.region not in topo.active_region_names:
        raise dg.Failure(
            f"unknown or standby region {config.region!r}; active regions: {topo.active_region_names}"
        )
    mlflow_tracking.preflight()
    try:
        change = registry.rollback(mlflow_tracking.client(), config.region, context.run_id, config.to_version)
    except registry.RegistryError as error:
        raise dg.Failure(str(error)) from error
    sync_registry_replica(topo, lake, mlflow_tracking.client(), config.region)
    ended = _end_running_experiment(
        topo, lake, config.region, f"champion rolled back v{change.previous} → v{change.current}"
    )
    context.log.info(f"{config.region}: {ended}")
    at = datetime.now(UTC)
    write_json(
        {
            "region": config.region,
            "decision": "rolled back",
            "reason": change.reason,
            "champion_version_before": change.previous,
            "champion_version_after": change.current,
            "dagster_run_id": context.run_id,
            "at": at.isoformat(),
        },
        lake.paths(topo, config.region).table("model_decisions") / f"{at:%Y%m%dT%H%M%S%f}.json",
    )
    context.log.info(f"{change.model}: champion v{change.previous} → v{change.current}")


@dg.job(
    description="Roll a region's champion back to the previous champion. Launch from the UI "
    "(Launchpad: region) or `meridian rollback --region <r>`.",
    tags={"meridian/kind": "rollback"},
)
def rollback_champion():
    rollback_champion_op()
