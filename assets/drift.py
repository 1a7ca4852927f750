"""Drift of every model feature and the score per region-day, with its alerts and asset check.

`feature_drift` (region × day) compares the day against the champion's training data —
the last `REFERENCE_DAYS` days of the training set it was trained on (found from the
model version's `training_set_as_of` tag): the latest population the model was fitted,
validated and tested on. (The oldest days of a long history describe customers as they
were; in a young lake they also carry the ramp-up of every 30-day window.) Every model
feature and the score are compared, with
`meridian.drift` (methods, thresholds and the reason for each in its docstring). The
day's side is its batch-scored transactions (`fraud_predictions`, features recomputed
point-in-time exactly as scoring computed them) and, when the service answered requests
that day, the scores it served (`scoring_decisions`). Results go to
`lake/drift/day=D/data.parquet`, a table and a plot in the metadata, an MLflow run
(`monitoring` stage, CSV + PNG), and alerts; its asset check fails with WARN or ERROR
severity.
"""

from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field, field_validator

from assets.inference import fraud_predictions
from assets.metadata import capped_table, png_image, png_markdown
from assets.ml_shared import load_booster
from assets.partitions import REGION_DAY_PARTITIONS, RegionFailures, days_by_region
from assets.promotion import fraud_model_promotion
from meridian import modeling, registry
from meridian.batch_scoring import FEATURES_COMPLETE, VIEW_TUPLE, prediction_features_by_day
from meridian.drift_rules import STATUS_RANK, drift_rows, parse_rule, served_drift
from meridian.feature_store import complete_from, history_start
from meridian.lake import partition_file
from meridian.locks import file_lock
from meridian.plots import drift_plot
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource

MONITORING_GROUP = "monitoring"


DRIFT_CHECK = "drift_within_thresholds"


REFERENCE_DAYS = 7


def reference_frame(lake_paths, client, region: str, version: int) -> tuple[pl.DataFrame, str]:
    """The last REFERENCE_DAYS days of the training set a model version was trained on."""
    tags = client.get_model_version(registry.model_name(region), str(version)).tags
    as_of = tags.get("training_set_as_of")
    if not as_of:
        raise dg.Failure(f"fraud-{region} v{version} has no training_set_as_of tag: its reference is unknown")
    path = lake_paths.table("training_set") / f"as_of={as_of[:10]}" / "data.parquet"
    if not path.exists():
        raise dg.Failure(
            f"the training set of fraud-{region} v{version} ({path}) is gone: no drift reference"
        )
    frame = pl.read_parquet(path)
    last = frame["event_day"].max()
    return frame.filter(pl.col("event_day") > last - timedelta(days=REFERENCE_DAYS)), as_of


class DriftConfig(dg.Config):
    rules: dict[str, str] = Field(
        default_factory=dict,
        description='per column (or column prefix): "method:warn:error", e.g. {"amount_usd": "ks:0.1:0.2"}; '
        "methods psi, ks, js, wasserstein, chi2",
    )

    @field_validator("rules")
    @classmethod
    def _each_rule_parses(cls, rules: dict[str, str]) -> dict[str, str]:
        for spec in rules.values():
            parse_rule(spec)  # refused when the step starts, naming the rule, not mid-way
        return rules


@dg.asset(
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        fraud_predictions,
        dg.AssetDep(
            fraud_model_promotion, partition_mapping=dg.MultiToSingleDimensionPartitionMapping("region")
        ),
    ],
    group_name=MONITORING_GROUP,
    owners=["team:fraud-ml"],
    kinds={"polars"},
    check_specs=[dg.AssetCheckSpec(DRIFT_CHECK, asset="feature_drift")],
    description="Each feature and the score of a region-day against the champion's training data: "
    "PSI, KS, Jensen-Shannon, Wasserstein, chi-square; alerts and a check with WARN/ERROR severity.",
)
def feature_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
    alerting: AlertingResource,
):
    topo = topology.load()
    mlflow_tracking.preflight()
    client = mlflow_tracking.client()
    summary: list[dict] = []
    worst_by_region: dict[str, str] = {}
    all_rows: list[dict] = []
    candidates = []
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region, days in run_days.items():
        with failures.region(region):
            paths = lake.paths(topo, region)
            version = registry.alias_version(client, registry.model_name(region), registry.CHAMPION)
            if version is None:
                raise dg.Failure(f"fraud-{region} has no champion: nothing to compare against")
            reference, as_of = reference_frame(paths, client, region, version)
            booster = load_booster(mlflow_tracking, region, version)
            columns = booster.feature_name()
            reference = reference.with_columns(
                pl.Series(
                    "score",
                    booster.predict(
                        modeling.design_matrix(reference, columns),
                        num_threads=modeling.lgb_threads(reference.height),
                    ),
                )
            )
            with (
                file_lock(paths.warehouse_lock, shared=True),
                duckdb.connect(str(paths.warehouse), read_only=True) as con,
            ):
                warm_from = complete_from(history_start(con), VIEW_TUPLE)
                for day, current in prediction_features_by_day(con, topo.region(region), days, warm_from):
                    predictions = partition_file(paths.table("predictions"), day)
                    if predictions.exists():
                        scores = pl.read_parquet(predictions, columns=["transaction_id", "score"])
                        current = current.join(scores, on="transaction_id", how="left")
                    else:
                        current = current.with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))
                    warming_up = int((~current[FEATURES_COMPLETE]).sum())
                    current = current.filter(pl.col(FEATURES_COMPLETE))
                    rows = drift_rows(reference, current, [*columns, "score"], config.rules)
                    if warming_up and current.is_empty():
                        for r in rows:
                            r["reason"] = (
                                f"every one of the day's {warming_up} rows has feature windows still warming up "
                                "(history is shorter than the views' warm-up): nothing to compare"
                            )
                    rows.extend(served_drift(paths, day, reference, columns, config.rules))
                    for r in rows:
                        r.update(region=region, day=day, model_version=version, reference_as_of=as_of)
                    frame = pl.DataFrame(rows, infer_schema_length=None)
                    lake.write_partition(paths, "drift", day, frame)
                    all_rows.extend(rows)
                    counts = {
                        s: sum(r["status"] == s for r in rows) for s in ("ok", "warn", "error", "no_data")
                    }
                    worst = max((r["status"] for r in rows), key=STATUS_RANK.__getitem__)
                    previous = worst_by_region.get(region, "ok")
                    worst_by_region[region] = max(worst, previous, key=STATUS_RANK.__getitem__)
                    summary.append(
                        {
                            "region": region,
                            "day": day,
                            "model_version": version,
                            "rows": current.height,
                            "rows_warming_up": warming_up,
                            "worst": worst,
                            **counts,
                        }
                    )
                    flagged = [r for r in rows if r["status"] in ("warn", "error")]
                    if flagged:
                        severity = "ERROR" if worst == "error" else "WARN"
                        alerting.send(
                            severity,
                            region,
                            "feature_drift",
                            f"drift:{region}:{day}",
                            f"{region} {day}: {len(flagged)} of {len(rows)} columns drifted "
                            f"({', '.join(r['column'] for r in flagged[:5])})",
                            {
                                "model_version": version,
                                "columns": {r["column"]: r["reason"] for r in flagged},
                            },
                        )
                    candidates.append(
                        (region, day, worst, rows, f"{region} {day} vs fraud-{region} v{version}")
                    )
    failures.raise_if_any([context.asset_key], run_days)
    table = [
        {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in r.items()
            if k in ("region", "day", "column", "method", "value", "status", "psi", "ks", "js", "wasserstein")
        }
        for r in all_rows
        if r["status"] != "ok"
    ]
    # Three plots, the worst region-days first, go to MLflow; the metadata shows the worst one.
    candidates.sort(key=lambda c: -STATUS_RANK[c[2]])
    pictures = [(region, day, drift_plot(rows, title)) for region, day, _worst, rows, title in candidates[:3]]
    images = (
        f"**{pictures[0][0]} {pictures[0][1]}** (the worst of {len(candidates)} region-days; the plots "
        f"are in each region's MLflow `monitoring` run)\n\n{png_markdown(pictures[0][2], 'drift').value}"
        if pictures
        else "nothing scored"
    )
    _log_to_mlflow(context, mlflow_tracking, lake, topo, all_rows, pictures)
    regions_in_error = sorted(r for r, w in worst_by_region.items() if w == "error")
    yield dg.MaterializeResult(
        metadata={
            "column_status_counts": dg.MetadataValue.json(
                {s: sum(r["status"] == s for r in all_rows) for s in ("ok", "warn", "error", "no_data")}
            ),
            "region_days_by_worst_status": dg.MetadataValue.json(
                {s: sum(r["worst"] == s for r in summary) for s in ("ok", "warn", "error", "no_data")}
            ),
            "by_day": dg.MetadataValue.md(markdown_table(summary)),
            "drifted_columns": capped_table(
                sorted(table, key=lambda r: -STATUS_RANK[r["status"]]), "in lake/drift (one file per day)"
            )
            if table
            else dg.MetadataValue.md("no column drifted"),
            "plots": dg.MetadataValue.md(images),
            "regions_in_error": dg.MetadataValue.json(regions_in_error),
            "regions_in_warn": dg.MetadataValue.json(
                sorted(r for r, w in worst_by_region.items() if w == "warn")
            ),
        }
    )
    worst = max(worst_by_region.values(), key=STATUS_RANK.__getitem__, default="ok")
    yield dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        passed=worst in ("ok", "no_data"),
        severity=dg.AssetCheckSeverity.ERROR if worst == "error" else dg.AssetCheckSeverity.WARN,
        metadata={
            "worst": worst,
            "regions_in_error": dg.MetadataValue.json(regions_in_error),
            "by_region": dg.MetadataValue.json(worst_by_region),
        },
    )


def _log_to_mlflow(context, mlflow_tracking, lake, topo, rows, pictures) -> None:
    """Per region: a `monitoring` run in its experiment with the table (CSV) and the plots."""
    for region in sorted({r["region"] for r in rows}):
        paths = lake.paths(topo, region)
        region_rows = [r for r in rows if r["region"] == region]
        with mlflow_tracking.start_run(
            context, region, "monitoring", paths.root / "mlflow-artifacts", {}
        ) as mlf:
            mlf.log_text(pl.DataFrame(region_rows, infer_schema_length=None).write_csv(), "drift/drift.csv")
            for r, day, png in pictures:
                if r == region:
                    mlf.log_image(png_image(png), f"drift/{day}.png")
            mlf.log_metrics(
                {
                    "columns_error": sum(r["status"] == "error" for r in region_rows),
                    "columns_warn": sum(r["status"] == "warn" for r in region_rows),
                }
            )


monitoring_job = dg.define_asset_job(
    "drift_monitoring",
    selection=dg.AssetSelection.assets(feature_drift),
    partitions_def=REGION_DAY_PARTITIONS,
    description="Drift of region-days against each region's champion training data.",
)
