"""A/B and canary analysis of what the service served: rollback, the next canary step, or promotion."""

import json
from datetime import UTC, datetime

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from assets.drift import MONITORING_GROUP
from assets.ml_shared import ALL_DAYS_OF_REGION, sync_registry_replica
from assets.partitions import REGION_PARTITIONS
from assets.transforms import LABELLED_EVENTS
from meridian import registry
from meridian.batch_scoring import FEATURES_COMPLETE
from meridian.lake import write_bytes_atomic
from meridian.locks import file_lock
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


class AnalysisConfig(dg.Config):
    """The guardrails of an experiment; nonsense (a negative rate, a factor of 0) is refused
    with the setting's name and range before any evidence is read (meridian.experiments)."""

    min_requests: int = Field(default=100, description="per variant, before anything but a rollback")
    max_fallback_rate: float = Field(default=0.01, description="share of challenger requests, in [0, 1]")
    latency_factor: float = Field(
        default=1.5, description="challenger p99 may be this x the champion's (+ latency_slack_ms); > 0"
    )
    latency_slack_ms: float = Field(default=0.0, description="added to the latency limit; >= 0")
    max_pr_auc_drop: float = Field(default=0.02, description="PR-AUC the challenger may lose, in [0, 1]")
    apply: bool = Field(default=True, description="write the decision (rollback, next step, promotion)")


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=["scoring_decisions", dg.AssetDep(LABELLED_EVENTS, partition_mapping=ALL_DAYS_OF_REGION)],
    group_name=MONITORING_GROUP,
    owners=["team:fraud-ml"],
    kinds={"scipy"},
    description="The running A/B test or canary step from the decision log and matured labels: "
    "per-variant evidence, Mann-Whitney U and two-proportion tests, and a decision (promote, hold, "
    "advance, roll back) that is applied to the deployment config and the registry.",
)
def deployment_analysis(
    context: dg.AssetExecutionContext,
    config: AnalysisConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    from meridian import deployment
    from meridian.experiments import Guardrails, analyze

    # Checked before any evidence is read: a nonsense setting fails the run naming it.
    guardrails = Guardrails(
        min_requests=config.min_requests,
        max_fallback_rate=config.max_fallback_rate,
        latency_factor=config.latency_factor,
        latency_slack_ms=config.latency_slack_ms,
        max_pr_auc_drop=config.max_pr_auc_drop,
    )
    region = context.partition_key
    topo = topology.load()
    paths = lake.paths(topo, region)
    current = deployment.load(paths.root, region)
    files = sorted(paths.table("scoring_decisions").glob("day=*/*.parquet"))
    decisions = (
        pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()
    )
    if decisions.height:
        decisions = decisions.filter(pl.col("experiment_id") == current.experiment_id)
        # A/B evidence only from rows whose feature windows were complete when scored.
        decisions = decisions.filter(
            pl.col(FEATURES_COMPLETE).fill_null(False)
            if FEATURES_COMPLETE in decisions.columns
            else pl.lit(False)
        )
        if current.strategy == "canary":  # only the current step's evidence counts for the current step
            decisions = decisions.filter(pl.col("challenger_share") == current.challenger_share)
    if decisions.height and paths.warehouse.exists():
        with (
            file_lock(paths.warehouse_lock, shared=True),
            duckdb.connect(str(paths.warehouse), read_only=True) as con,
        ):
            labels = con.sql(
                "select transaction_id, is_fraud::int as label from labelled_events where label_matures_at <= now()"
            ).pl()
        decisions = decisions.join(labels, on="transaction_id", how="left")
    if decisions.height:
        result = analyze(decisions, current.strategy, current.canary_ramp, current.canary_step, guardrails)
    else:
        result = {
            "decision": "hold",
            "reason": f"no decisions logged for experiment {current.experiment_id} yet",
            "evidence": {},
            "tests": {},
            "strategy": current.strategy,
        }
    applied = "not applied (apply: false)" if not config.apply else "nothing to apply"
    if config.apply and result["decision"] in ("rollback", "advance", "promote"):
        applied = _apply(context, result, current, topo, lake, region, mlflow_tracking, alerting)
    record = {
        "at": datetime.now(UTC).isoformat(),
        "region": region,
        "experiment_id": current.experiment_id,
        "step": current.canary_step if current.strategy == "canary" else None,
        "applied": applied,
        **result,
    }
    write_bytes_atomic(
        json.dumps(record, indent=1, default=str).encode(),
        paths.table("deployment_decisions") / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}.json",
    )
    evidence_rows = [
        {"variant": v, **{k: (round(x, 4) if isinstance(x, float) else x) for k, x in e.items()}}
        for v, e in result["evidence"].items()
    ]
    return dg.MaterializeResult(
        metadata={
            "decision": result["decision"],
            "reason": result["reason"],
            "applied": applied,
            "experiment_id": current.experiment_id,
            "strategy": current.strategy,
            "evidence": dg.MetadataValue.md(
                markdown_table(evidence_rows) if evidence_rows else "no evidence"
            ),
            "tests": dg.MetadataValue.json(result["tests"]),
        }
    )


def _apply(context, result, current, topo, lake, region, mlflow_tracking, alerting) -> str:
    """Apply a decision through the synchronous DR writes of both classes it touches: the
    deployment config (`dr.publish_deployment`) and, on promotion, the model registry."""
    from meridian import deployment, dr

    def publish(config: deployment.DeploymentConfig) -> None:
        try:
            dr.publish_deployment(topo, lake.root(), region, config)
        except (OSError, dr.FailoverError, KeyError) as error:
            raise dg.Failure(
                f"{region}: {result['decision']} not applied: the DR copy failed: {error}"
            ) from error

    decision = result["decision"]
    if decision == "advance":
        moved = current.model_copy(
            update={"canary_step": current.canary_step + 1, "written_at": datetime.now(UTC).isoformat()}
        )
        publish(deployment.DeploymentConfig.model_validate(moved.model_dump()))
        return f"canary advanced to {moved.canary_ramp[moved.canary_step]} %"
    back = deployment.end_experiment(current, f"deployment_analysis {decision}: {result['reason']}")
    if decision == "rollback":
        publish(back)
        alerting.send(
            "ERROR",
            region,
            "deployment_analysis",
            f"rollback:{current.experiment_id}",
            f"{region}: {result['reason']}; challenger withdrawn",
        )
        return "challenger withdrawn: champion only"
    client = mlflow_tracking.client()
    challenger = registry.alias_version(client, registry.model_name(region), registry.CHALLENGER)
    if challenger is None:
        return "no challenger alias any more: nothing promoted"
    registry.promote(
        client, region, challenger, f"online {current.strategy}: {result['reason']}", context.run_id
    )
    sync_registry_replica(topo, lake, client, region)
    publish(back)
    alerting.send(
        "INFO",
        region,
        "deployment_analysis",
        f"promote:{current.experiment_id}",
        f"{region}: v{challenger} promoted ({result['reason']})",
    )
    return f"v{challenger} promoted to champion; champion only"


deployment_analysis_job = dg.define_asset_job(
    "deployment_analysis_job",
    selection=dg.AssetSelection.assets(deployment_analysis),
    partitions_def=REGION_PARTITIONS,
    description="Analyse and act on a region's A/B test or canary step.",
)
