"""Monitoring: feature and score drift per region-day, alerts, and drift-triggered retraining.

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

Automation:
- `predictions_drift_sensor` watches `fraud_predictions` materializations (an asset
  sensor over the event log, cursor = last storage id) and requests `feature_drift` for
  the same region-days;
- `drift_retraining_sensor` watches `feature_drift` materializations and launches
  `ml_training` for a region whose drift reached ERROR — at most one run per region in
  flight, and not again within `RETRAIN_DEBOUNCE` of the last one it launched;
- `run_failure_alert_sensor` sends an ERROR alert for any failed run, with its region.
"""

import io
import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from assets.ml import (
    ALL_DAYS_OF_REGION,
    FEATURES_COMPLETE,
    REGION_PARTITIONS,
    VIEW_TUPLE,
    fraud_model_promotion,
    fraud_predictions,
    load_booster,
    png_image,
    png_markdown,
    prediction_features,
)
from assets.partitions import REGION_DAY_PARTITIONS, RegionFailures, days_by_region
from meridian import modeling, registry
from meridian.drift import DriftRule, column_drift, frame_drift
from meridian.feature_store import complete_from, history_start
from meridian.lake import partition_file, write_bytes_atomic
from meridian.locks import file_lock
from meridian.report import markdown_table
from meridian.run_tags import region_of_run_tags
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource

MONITORING_GROUP = "monitoring"
DRIFT_CHECK = "drift_within_thresholds"
RETRAIN_DEBOUNCE = timedelta(hours=12)
TRAINING_ASSETS = frozenset(
    {"training_set", "fraud_model_hyperparameters", "fraud_model", "fraud_model_promotion"}
)
REFERENCE_DAYS = 7
STATUS_RANK = {"ok": 0, "no_data": 0, "warn": 1, "error": 2}


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


# Per-feature rules beside meridian.drift's defaults by kind (PSI for numeric, JS for categorical).
FEATURE_RULES: dict[str, DriftRule] = {
    # A merchant's values repeat on every one of its transactions: the day's sample holds as
    # many independent values as merchants that traded (~150 here), and which large
    # merchants traded moves decile PSI by 0.5+ on a quiet day. KS bounds the largest gap
    # between the two CDFs and does not over-react to a few heavy merchants.
    "merchant_risk__": DriftRule("ks", 0.15, 0.3, "entity-level feature: KS, robust to few, heavy entities"),
}


class DriftConfig(dg.Config):
    rules: dict[str, str] = Field(
        default_factory=dict,
        description='per column (or column prefix): "method:warn:error", e.g. {"amount_usd": "ks:0.1:0.2"}; '
        "methods psi, ks, js, wasserstein, chi2",
    )


def rule_for(column: str, overrides: dict[str, str]) -> DriftRule | None:
    """The rule for a column: a config override, else FEATURE_RULES by prefix, else the kind's default."""
    for prefix, spec in sorted(overrides.items(), key=lambda kv: -len(kv[0])):
        if column.startswith(prefix):
            method, warn, error = spec.split(":")
            return DriftRule(method, float(warn), float(error), "configured")
    for prefix, rule in FEATURE_RULES.items():
        if column.startswith(prefix):
            return rule
    return None


def drift_rows(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: list[str],
    overrides: dict[str, str] | None = None,
) -> list[dict]:
    rules = {c: rule_for(c, overrides or {}) for c in columns}
    return [r.row() for r in frame_drift(reference, current, columns, rules=rules)]


def served_drift(paths, day: str, reference: pl.DataFrame, columns: list[str], overrides) -> list[dict]:
    """Drift of what the scoring service served on `day` (its decision log): the score, and
    each model input as it was scored, named "<column> (served)"."""
    served = partition_file(paths.table("scoring_decisions"), day)
    if not served.exists():
        return []
    decisions = pl.read_parquet(served)
    # Decisions scored on windows still warming up are no evidence of drift (nor logs from
    # before the flag existed, which cannot say).
    decisions = decisions.filter(
        pl.col(FEATURES_COMPLETE).fill_null(False)
        if FEATURES_COMPLETE in decisions.columns
        else pl.lit(False)
    )
    if decisions.is_empty():
        return []
    rows = [column_drift("score (served)", reference["score"], decisions["score"]).row()]
    if "features" in decisions.columns and decisions["features"].is_not_null().any():
        logged = decisions.filter(pl.col("features").is_not_null())
        dtype = pl.Struct({c: reference.schema[c] for c in columns})
        values = logged.select(pl.col("features").str.json_decode(dtype)).unnest("features")
        for r in drift_rows(reference, values, columns, overrides):
            rows.append({**r, "column": f"{r['column']} (served)"})
    return rows


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def _plot(rows: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ok": "#4c9a2a", "warn": "#e0a100", "error": "#c0392b", "no_data": "#999999"}
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    names = [r["column"] for r in rows]
    values = [r["value"] or 0.0 for r in rows]
    ax.barh(names, values, color=[colours[r["status"]] for r in rows])
    ax.set_xlabel("drift statistic (PSI for numeric, Jensen-Shannon for categorical)")
    ax.axvline(0.1, color="#e0a100", linestyle="--", linewidth=1)
    ax.axvline(0.25, color="#c0392b", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


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
    pictures = []
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
                pl.Series("score", booster.predict(modeling.design_matrix(reference, columns), num_threads=2))
            )
            with (
                file_lock(paths.warehouse_lock, shared=True),
                duckdb.connect(str(paths.warehouse), read_only=True) as con,
            ):
                warm_from = complete_from(history_start(con), VIEW_TUPLE)
                for day in days:
                    current = prediction_features(con, topo.region(region), day, warm_from)
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
                    if len(pictures) < 3:
                        pictures.append(
                            (region, day, _plot(rows, f"{region} {day} vs fraud-{region} v{version}"))
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
    images = "\n\n".join(
        f"**{region} {day}**\n\n{png_markdown(png, 'drift').value}" for region, day, png in pictures
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
            "drifted_columns": dg.MetadataValue.md(markdown_table(table) if table else "no column drifted"),
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


def _drift_is_newer(instance: dg.DagsterInstance, partition: str, storage_id: int) -> bool:
    """feature_drift of `partition` was materialized after the predictions record `storage_id`."""
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("feature_drift"), asset_partitions=[partition]), limit=1
    ).records
    return bool(latest) and latest[0].storage_id > storage_id


def _new_materializations(context: dg.SensorEvaluationContext, key: dg.AssetKey) -> list:
    """Materializations of `key` since the sensor's cursor (a storage id), oldest first; the
    cursor moves past them."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000, ascending=True
    ).records
    if records:
        context.update_cursor(str(records[-1].storage_id))
    return list(records)


@dg.sensor(
    job=monitoring_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the drift checks for every region-day whose predictions were just materialized.",
)
def predictions_drift_sensor(context: dg.SensorEvaluationContext):
    for record in _new_materializations(context, fraud_predictions.key):
        partition = record.partition_key
        # Drift already measured on these predictions (the main job runs it): nothing to catch up.
        if partition and not _drift_is_newer(context.instance, partition, record.storage_id):
            yield dg.RunRequest(
                run_key=f"drift-{partition}-{record.storage_id}",
                partition_key=partition,
                tags={"meridian/region": partition.split("|")[1], "meridian/trigger": "predictions"},
            )


def _retraining_state(instance: dg.DagsterInstance, region: str) -> tuple[bool, datetime | None]:
    """(a training run of the region is queued or running, when a drift retraining last started)."""
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    # Whatever launched it (UI, schedule, CLI, another sensor) and whatever tags it carries: a
    # run of the region that trains (the ml_training job, or an asset run selecting a training asset).
    in_flight = any(
        region_of_run_tags(run.tags) == region
        and (
            run.job_name == "ml_training"
            or bool({k.to_user_string() for k in (run.asset_selection or ())} & TRAINING_ASSETS)
        )
        for run in instance.get_runs(dg.RunsFilter(statuses=active))
    )
    launched = instance.get_run_records(
        dg.RunsFilter(tags={"meridian/region": region, "meridian/trigger": "drift"}), limit=1
    )
    last = None
    if launched:
        last = launched[0].create_timestamp
        last = last if last.tzinfo else last.replace(tzinfo=UTC)
    return in_flight, last


@dg.sensor(
    job_name="ml_training",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains a region whose drift reached ERROR: one run per region at a time, debounced.",
)
def drift_retraining_sensor(context: dg.SensorEvaluationContext, alerting: AlertingResource):
    records = _new_materializations(context, feature_drift.key)
    regions: dict[str, str] = {}
    for record in records:
        metadata = record.asset_materialization.metadata
        for region in metadata["regions_in_error"].value if "regions_in_error" in metadata else []:
            regions[region] = record.partition_key or ""
    now = datetime.now(UTC)
    for region, partition in sorted(regions.items()):
        in_flight, last = _retraining_state(context.instance, region)
        if in_flight:
            context.log.info(f"{region}: drift in error, a training run is already queued or running")
            continue
        if last and now - last < RETRAIN_DEBOUNCE:
            context.log.info(f"{region}: drift in error, retrained at {last:%Y-%m-%d %H:%M}; debounced")
            continue
        alerting.send(
            "WARN",
            region,
            "drift_retraining_sensor",
            f"retrain:{region}",
            f"{region}: drift reached ERROR ({partition}); retraining launched",
        )
        yield dg.RunRequest(
            run_key=f"retrain-{region}-{records[-1].storage_id}",
            partition_key=region,
            tags={"meridian/region": region, "meridian/trigger": "drift"},
        )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="An ERROR alert for every failed run, with its region.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerting: AlertingResource):
    run = context.dagster_run
    region = run.tags.get("meridian/region") or _region_of(run.tags.get("dagster/partition", "")) or "global"
    alerting.send(
        "ERROR",
        region,
        "run_failure",
        f"run-failure:{run.job_name}:{region}",
        f"{run.job_name} failed for {region}: {context.failure_event.message}",
        {"run_id": run.run_id},
    )


def _region_of(partition: str) -> str | None:
    parts = partition.split("|")
    return parts[-1] if len(parts) == 2 else (partition or None)


# ---------------------------------------------------------------- performance


class PerformanceConfig(dg.Config):
    threshold: float = Field(default=0.5, description="operating threshold for precision and recall")
    window_days: int = Field(default=7, description="matured days the check looks at")
    max_pr_auc_drop: float = Field(
        default=0.15, description="ERROR when the champion's recent PR-AUC is this far below its test PR-AUC"
    )


def matured_predictions(paths, con: duckdb.DuckDBPyConnection, as_of: datetime) -> pl.DataFrame:
    """Every scored transaction whose label has matured by `as_of`, with its label."""
    files = sorted(paths.table("predictions").glob("day=*/*.parquet"))
    if not files:
        return pl.DataFrame()
    scored = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    if FEATURES_COMPLETE not in scored.columns:
        scored = scored.with_columns(pl.lit(None, dtype=pl.Boolean).alias(FEATURES_COMPLETE))
    # Rows scored on windows still warming up say nothing about the model in steady state.
    # (Predictions written before the flag existed get it from the warm-up's first day.)
    warm_from = complete_from(history_start(con), VIEW_TUPLE)
    known = pl.lit(False) if warm_from is None else pl.col("event_day") >= pl.lit(warm_from.date())
    scored = scored.filter(pl.col(FEATURES_COMPLETE).fill_null(known)).select(
        "transaction_id", "event_day", "score", "model_version"
    )
    labels = con.sql(
        f"select transaction_id, is_fraud::int as label from labelled_events "
        f"where label_matures_at <= timestamp '{as_of:%Y-%m-%d %H:%M:%S}'"
    ).pl()
    return scored.join(labels, on="transaction_id", how="inner")


def champion_test_pr_auc(tags: dict[str, str]) -> float | None:
    """The test PR-AUC a model version was registered with; None when missing or not a number in [0, 1]."""
    import math

    try:
        value = float(tags["test_pr_auc"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def performance_rows(frame: pl.DataFrame, threshold: float) -> list[dict]:
    """Metrics per (model version, day); a day with one class only says so instead of a number."""
    rows = []
    for (version, day), group in frame.group_by("model_version", "event_day", maintain_order=True):
        row: dict[str, object] = {"model_version": int(version), "day": str(day), "rows": group.height}
        try:
            metrics = modeling.evaluate(group["label"].to_numpy(), group["score"].to_numpy(), threshold)
            row.update({k: round(v, 5) for k, v in metrics.items() if k not in ("rows",)})
            row["note"] = ""
        except ValueError as error:
            row["note"] = str(error)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["day"], r["model_version"]))


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[
        dg.AssetDep(fraud_predictions, partition_mapping=ALL_DAYS_OF_REGION),
        dg.AssetDep("labelled_events", partition_mapping=ALL_DAYS_OF_REGION),
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
    picture = _performance_plot(rows, region) if rows else None
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


def _performance_plot(rows: list[dict], region: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("pr_auc") is not None]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for version in sorted({r["model_version"] for r in scored}):
        mine = [r for r in scored if r["model_version"] == version]
        ax.plot([r["day"] for r in mine], [r["pr_auc"] for r in mine], marker="o", label=f"v{version} PR-AUC")
        ax.plot(
            [r["day"] for r in mine],
            [r["roc_auc"] for r in mine],
            linestyle="--",
            label=f"v{version} ROC-AUC",
        )
    ax.set_ylim(0, 1.02)
    ax.set_title(f"fraud-{region}: matured performance by day")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


performance_job = dg.define_asset_job(
    "performance_monitoring",
    selection=dg.AssetSelection.assets(model_performance),
    partitions_def=REGION_PARTITIONS,
    description="A region's matured performance per model version and day, and the champion check.",
)


# ---------------------------------------------------------------- the global view


def _latest_day(table_dir) -> str | None:
    days = sorted(p.name.removeprefix("day=") for p in table_dir.glob("day=*") if any(p.glob("*.parquet")))
    return days[-1] if days else None


@dg.asset(
    deps=[feature_drift, model_performance],
    # Declarative automation: refresh the view whenever a region's drift or performance lands.
    automation_condition=dg.AutomationCondition.eager(),
    group_name=MONITORING_GROUP,
    owners=["team:platform"],
    kinds={"json"},
    description="Every region at a glance: data freshness, latest drift, champion version, open alerts "
    "(last 24 h). Aggregates only: nothing personal leaves a region.",
)
def platform_health(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
    alerting: AlertingResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    now = datetime.now(UTC)
    alerts = [a for a in alerting.read() if now - datetime.fromisoformat(a["at"]) < timedelta(hours=24)]
    client, registry_error = None, ""
    try:
        mlflow_tracking.preflight()
        client = mlflow_tracking.client()
    except Exception as error:  # the view still shows what it can; the column says why
        client, registry_error = None, f"registry unavailable: {error}"
    rows = []
    for region in topo.active_region_names:
        paths = lake.paths(topo, region)
        drift_day = _latest_day(paths.table("drift"))
        drift = "none yet"
        if drift_day:
            statuses = pl.read_parquet(partition_file(paths.table("drift"), drift_day), columns=["status"])[
                "status"
            ]
            drift = max(statuses.to_list(), key=STATUS_RANK.__getitem__)
        champion = (
            registry.alias_version(client, registry.model_name(region), registry.CHAMPION)
            if client
            else registry_error
        )
        mine = [a for a in alerts if a["region"] == region]
        rows.append(
            {
                "region": region,
                "zone": topo.region(region).zone,
                "latest_lake_day": _latest_day(paths.table("raw_transactions")) or "none",
                "latest_scored_day": _latest_day(paths.table("predictions")) or "none",
                "latest_drift_day": drift_day or "none",
                "drift": drift,
                "champion_version": champion if champion is not None else "none",
                "alerts_error_24h": sum(a["severity"] == "ERROR" for a in mine),
                "alerts_warn_24h": sum(a["severity"] == "WARN" for a in mine),
            }
        )
    home = lake.root()  # the lake resource's data root, as every other global asset writes
    write_bytes_atomic(
        json.dumps({"at": now.isoformat(), "regions": rows}, indent=1, default=str).encode(),
        home / "platform" / "health.json",
    )
    return dg.MaterializeResult(
        metadata={
            "regions": dg.MetadataValue.md(markdown_table(rows)),
            "plot": png_markdown(_health_plot(rows), "open alerts per region"),
            "regions_with_errors": dg.MetadataValue.json(
                [r["region"] for r in rows if r["alerts_error_24h"] or r["drift"] == "error"]
            ),
        }
    )


def _health_plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    regions = [r["region"] for r in rows]
    ax.bar(regions, [r["alerts_error_24h"] for r in rows], color="#c0392b", label="ERROR")
    ax.bar(
        regions,
        [r["alerts_warn_24h"] for r in rows],
        bottom=[r["alerts_error_24h"] for r in rows],
        color="#e0a100",
        label="WARN",
    )
    for i, r in enumerate(rows):
        ax.annotate(
            f"drift: {r['drift']}\nv{r['champion_version']}", (i, 0), ha="center", va="bottom", fontsize=8
        )
    ax.set_ylabel("alerts, last 24 h")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------- A/B and canary


class AnalysisConfig(dg.Config):
    min_requests: int = Field(default=100, description="per variant, before anything but a rollback")
    max_fallback_rate: float = 0.01
    latency_factor: float = Field(
        default=1.5, description="challenger p99 may be this x the champion's (+1 ms)"
    )
    max_pr_auc_drop: float = 0.02
    apply: bool = Field(default=True, description="write the decision (rollback, next step, promotion)")


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=["scoring_decisions", dg.AssetDep("labelled_events", partition_mapping=ALL_DAYS_OF_REGION)],
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
    guardrails = Guardrails(
        min_requests=config.min_requests,
        max_fallback_rate=config.max_fallback_rate,
        latency_factor=config.latency_factor,
        max_pr_auc_drop=config.max_pr_auc_drop,
    )
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
        applied = _apply(context, result, current, paths, region, mlflow_tracking, alerting)
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


def _apply(context, result, current, paths, region, mlflow_tracking, alerting) -> str:
    from meridian import deployment

    decision = result["decision"]
    if decision == "advance":
        moved = current.model_copy(
            update={"canary_step": current.canary_step + 1, "written_at": datetime.now(UTC).isoformat()}
        )
        deployment.save(deployment.DeploymentConfig.model_validate(moved.model_dump()), paths.root)
        return f"canary advanced to {moved.canary_ramp[moved.canary_step]} %"
    back = deployment.DeploymentConfig(
        region=region, strategy="champion", experiment_id=f"{current.experiment_id}-ended"
    )
    if decision == "rollback":
        deployment.save(back, paths.root)
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
    deployment.save(back, paths.root)
    alerting.send(
        "INFO",
        region,
        "deployment_analysis",
        f"promote:{current.experiment_id}",
        f"{region}: v{challenger} promoted ({result['reason']})",
    )
    return f"v{challenger} promoted to champion; champion only"


@dg.sensor(
    job_name="deployment_analysis_job",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Analyses a region's running experiment whenever new scoring decisions land.",
)
def deployment_analysis_sensor(context: dg.SensorEvaluationContext):
    records = _new_materializations(context, dg.AssetKey("scoring_decisions"))
    for region in sorted({r.partition_key for r in records if r.partition_key}):
        yield dg.RunRequest(
            run_key=f"analysis-{region}-{records[-1].storage_id}",
            partition_key=region,
            tags={"meridian/region": region},
        )


deployment_analysis_job = dg.define_asset_job(
    "deployment_analysis_job",
    selection=dg.AssetSelection.assets(deployment_analysis),
    partitions_def=REGION_PARTITIONS,
    description="Analyse and act on a region's A/B test or canary step.",
)
