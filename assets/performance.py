"""Matured performance of each region's models (meridian.performance), and the champion's check."""

from datetime import datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from assets.drift import MONITORING_GROUP
from assets.inference import fraud_predictions
from assets.metadata import png_image, png_markdown
from assets.ml_shared import ALL_DAYS_OF_REGION
from assets.partitions import REGION_PARTITIONS
from assets.transforms import LABELLED_EVENTS
from meridian import modeling, registry
from meridian.locks import file_lock
from meridian.performance import champion_test_pr_auc, matured_predictions, performance_rows
from meridian.plots import performance_plot
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


class PerformanceConfig(dg.Config):
    threshold: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="operating threshold for precision and recall",
    )
    window_days: int = Field(default=7, ge=1, description="matured days the check looks at")
    max_pr_auc_drop: float = Field(
        default=0.15,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="ERROR when the champion's recent PR-AUC is this far below its test PR-AUC",
    )


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[
        dg.AssetDep(fraud_predictions, partition_mapping=ALL_DAYS_OF_REGION),
        dg.AssetDep(LABELLED_EVENTS, partition_mapping=ALL_DAYS_OF_REGION),
    ],
    group_name=MONITORING_GROUP,
    owners=["team:fraud-ml"],
    kinds={"polars"},
    check_specs=[dg.AssetCheckSpec("champion_performance_holds", asset="model_performance", blocking=True)],
    # Every morning after the nightly scoring: labels that matured overnight are evaluated.
    automation_condition=dg.AutomationCondition.on_cron("0 6 * * *"),
    description="Once labels mature: ROC-AUC, PR-AUC, precision and recall at the threshold, "
    "calibration (ECE), per model version and day; the champion's recent PR-AUC against its test PR-AUC.",
)
def model_performance(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
    alerting: AlertingResource,
):
    region = context.partition_key
    topo = topology.load()
    paths = lake.paths(topo, region)
    client = mlflow_tracking.client()
    name = registry.model_name(region)
    champion = registry.alias_version(client, name, registry.CHAMPION)
    with (
        file_lock(paths.warehouse_lock, shared=True),
        duckdb.connect(str(paths.warehouse), read_only=True) as con,
    ):
        last_day = con.sql("select max(event_day) from stg_transactions").fetchall()[0][0]
        as_of = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
        frame = matured_predictions(paths, con, as_of)
    rows = performance_rows(frame, config.threshold) if frame.height else []
    if rows:
        lake.write_partition(
            paths, "performance", as_of.date().isoformat(), pl.DataFrame(rows, infer_schema_length=None)
        )
    recent = (
        frame.filter(
            (pl.col("model_version") == champion)
            & (pl.col("event_day") > (as_of.date() - timedelta(days=config.window_days + 10)))
        )
        if frame.height and champion
        else pl.DataFrame()
    )
    check: dict[str, object] = {"champion_version": champion or "none", "as_of": as_of.date().isoformat()}
    passed, reason = True, "no matured labels for the champion yet: nothing to judge"
    if recent.height and champion:
        expected = champion_test_pr_auc(client.get_model_version(name, str(champion)).tags)
        try:
            live = modeling.evaluate(recent["label"].to_numpy(), recent["score"].to_numpy(), config.threshold)
        except ValueError as error:
            live, reason = None, f"matured rows of the champion cannot be evaluated yet: {error}"
        if live is not None and expected is None:
            # No baseline to hold the champion to: that is a failure to say, never a silent pass.
            passed = False
            reason = (
                f"{name} v{champion} has no valid test_pr_auc tag: its live PR-AUC {live['pr_auc']:.3f} "
                "cannot be judged; re-register the version with its test metrics"
            )
            check.update(live_pr_auc=round(live["pr_auc"], 5), test_pr_auc="missing", rows=recent.height)
        elif live is not None:
            check.update(live_pr_auc=round(live["pr_auc"], 5), test_pr_auc=expected, rows=recent.height)
            passed = not (live["pr_auc"] < expected - config.max_pr_auc_drop)
            reason = (
                f"PR-AUC {live['pr_auc']:.3f} on {recent.height} matured rows vs {expected:.3f} on its test split "
                f"(allowed drop {config.max_pr_auc_drop})"
            )
    if not passed:
        alerting.send("ERROR", region, "model_performance", f"performance:{region}:{champion}", reason, check)
    picture = performance_plot(rows, region) if rows else None
    if picture:
        with mlflow_tracking.start_run(
            context, region, "performance", paths.root / "mlflow-artifacts", {}
        ) as mlf:
            mlf.log_text(pl.DataFrame(rows, infer_schema_length=None).write_csv(), "performance/by_day.csv")
            mlf.log_image(png_image(picture), "performance/pr_auc_by_day.png")
    yield dg.MaterializeResult(
        metadata={
            "plot": png_markdown(picture, "PR-AUC by day and model version")
            if picture
            else "no matured labels yet",
            "as_of": as_of.date().isoformat(),
            "matured_rows": frame.height,
            "by_version_and_day": dg.MetadataValue.md(markdown_table(rows) if rows else reason),
            "champion": reason,
        }
    )
    yield dg.AssetCheckResult(
        check_name="champion_performance_holds",
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={**check, "reason": reason},
    )


performance_job = dg.define_asset_job(
    "performance_monitoring",
    selection=dg.AssetSelection.assets(model_performance),
    partitions_def=REGION_PARTITIONS,
    description="A region's matured performance per model version and day, and the champion check.",
)
