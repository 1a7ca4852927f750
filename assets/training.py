"""Training per region: the matured-label training set, Optuna tuning, and the LightGBM model in MLflow.

Files in the region's lake (each replaced atomically): `training_set/as_of=<day>/data.parquet`
and `training_set/current.json`; `tuning/current.json` (best parameters and the trial history).
"""

import hashlib
import json
import time
import warnings
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from assets.features import view_asset_key
from assets.metadata import png_image, png_markdown
from assets.ml_shared import (
    ALL_DAYS_OF_REGION,
    ML_GROUP,
    OWNERS,
    current_training_set,
    load_training_frame,
    partition_region,
    read_json_or_fail,
    sync_registry_replica,
    write_json,
)
from assets.partitions import REGION_PARTITIONS
from assets.transforms import LABELLED_EVENTS
from meridian import modeling, registry
from meridian.batch_scoring import VIEW_TUPLE, VIEW_VERSIONS
from meridian.feature_store import complete_from, history_start
from meridian.lake import write_parquet_atomic
from meridian.lake_sync import synced_versions
from meridian.locks import file_lock
from meridian.plots import curves_png
from meridian.report import markdown_table
from meridian.training_set import build_training_set, rows_without_features, warmup_excluded_rows
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


class TrainingSetConfig(dg.Config):
    as_of: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="YYYY-MM-DD; default: the day after the last labelled day",
    )
    validation_share: float = Field(default=0.15, gt=0, lt=1, allow_inf_nan=False)
    test_share: float = Field(default=0.15, gt=0, lt=1, allow_inf_nan=False)


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[
        dg.AssetDep(LABELLED_EVENTS, partition_mapping=ALL_DAYS_OF_REGION),
        *(dg.AssetDep(view_asset_key(v.name), partition_mapping=ALL_DAYS_OF_REGION) for v in VIEW_TUPLE),
    ],
    group_name=ML_GROUP,
    owners=OWNERS,
    kinds={"duckdb", "parquet"},
    description="Matured labelled transactions with point-in-time features, split by time into "
    "train / validation / test.",
)
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
) -> dg.MaterializeResult:
    region = partition_region(context)
    topo = topology.load()
    paths = lake.paths(topo, region)
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else None
    with (
        file_lock(paths.warehouse_lock, shared=True),
        duckdb.connect(str(paths.warehouse), read_only=True) as con,
    ):
        frame, _, as_of = build_training_set(
            con, VIEW_TUPLE, topo.region(region), as_of, config.validation_share, config.test_share
        )
        warm_from = complete_from(history_start(con), VIEW_TUPLE)
        warming_up = warmup_excluded_rows(con, VIEW_TUPLE, as_of, warm_from)
        # The lake's table versions the warehouse was built from: a rebuild at these versions
        # (MERIDIAN_DBT_LAKE_VERSIONS, meridian.dbt_lake) gives the same rows.
        lake_versions = synced_versions(con)
    content = frame.select("transaction_id", "label", "split").hash_rows(seed=0).to_numpy().tobytes()
    dataset_version = hashlib.sha256(
        json.dumps({"views": VIEW_VERSIONS, "as_of": as_of.isoformat()}).encode() + content
    ).hexdigest()[:16]
    path = paths.table("training_set") / f"as_of={as_of:%Y-%m-%d}" / "data.parquet"
    write_parquet_atomic(frame, path)
    by_split = (
        frame.group_by("split")
        .agg(
            pl.len().alias("rows"),
            pl.col("label").sum().alias("positives"),
            pl.col("label").mean().round(5).alias("positive_rate"),
            pl.col("event_day").min().alias("first_day"),
            pl.col("event_day").max().alias("last_day"),
        )
        .sort(pl.col("first_day"))
    )
    defaults = rows_without_features(frame, VIEW_TUPLE)
    manifest = {
        "region": region,
        "dataset_version": dataset_version,
        "as_of": as_of.isoformat(),
        "path": str(path),
        "rows": frame.height,
        "positives": int(frame["label"].sum()),
        "feature_view_versions": VIEW_VERSIONS,
        "lake_versions": lake_versions,
        "feature_columns": modeling.feature_columns(VIEW_TUPLE),
        "splits": {row["split"]: {k: str(v) for k, v in row.items()} for row in by_split.to_dicts()},
        "rows_with_default_features": defaults,
        "features_complete_from": warm_from.isoformat(),
        "rows_excluded_warming_up": warming_up,
        "dagster_run_id": context.run_id,
    }
    write_json(manifest, paths.table("training_set") / "current.json")
    return dg.MaterializeResult(
        metadata={
            "dataset_version": dataset_version,
            "as_of": as_of.isoformat(),
            "rows": frame.height,
            "positive_rate": round(float(frame["label"].mean()), 5),
            "splits": dg.MetadataValue.md(markdown_table(by_split.to_dicts())),
            "time_range": f"{frame['event_time'].min()} → {frame['event_time'].max()}",
            "feature_view_versions": dg.MetadataValue.json(VIEW_VERSIONS),
            "lake_versions": dg.MetadataValue.json(lake_versions),
            "rows_with_default_features": dg.MetadataValue.json(defaults),
            "features_complete_from": warm_from.isoformat(),
            "rows_excluded_warming_up": warming_up,
            "path": dg.MetadataValue.path(str(path)),
        },
        data_version=dg.DataVersion(dataset_version),
    )


class TuningConfig(dg.Config):
    n_trials: int = Field(default=20, ge=1)
    timeout_seconds: float = Field(default=180.0, gt=0, allow_inf_nan=False)
    max_rounds: int = Field(default=400, ge=1)
    seed: int = 7


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[training_set],
    group_name=ML_GROUP,
    owners=OWNERS,
    kinds={"optuna", "lightgbm", "mlflow"},
    description="Optuna TPE search over LightGBM parameters (median pruning per boosting round), "
    "bounded by a trial budget and a time budget; maximises validation PR-AUC.",
)
def fraud_model_hyperparameters(
    context: dg.AssetExecutionContext,
    config: TuningConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    region = partition_region(context)
    paths = lake.paths(topology.load(), region)
    mlflow_tracking.preflight()
    manifest = current_training_set(paths)
    splits = modeling.Splits.from_frame(load_training_frame(manifest), manifest["feature_columns"])
    result = modeling.tune(splits, config.n_trials, config.timeout_seconds, config.max_rounds, config.seed)
    trials = pl.DataFrame(result.trials)
    with mlflow_tracking.start_run(
        context,
        region,
        "tuning",
        paths.root / "mlflow-artifacts",
        {"dataset_version": manifest["dataset_version"]},
    ) as mlf:
        mlf.log_params({f"best_{k}": v for k, v in result.best_params.items()})
        mlf.log_params({"n_trials_budget": config.n_trials, "timeout_seconds": config.timeout_seconds})
        mlf.log_metrics(
            {
                "best_validation_pr_auc": result.best_value,
                "trials_completed": sum(t["state"] == "complete" for t in result.trials),
                "trials_pruned": sum(t["state"] == "pruned" for t in result.trials),
                "tuning_seconds": result.seconds,
            }
        )
        mlf.log_text(trials.write_csv(), "tuning/trials.csv")
        run = mlf.active_run()
    tuned = {
        "region": region,
        "dataset_version": manifest["dataset_version"],
        "best_params": result.best_params,
        "best_validation_pr_auc": result.best_value,
        "best_iteration": result.best_iteration,
        "trials": result.trials,
        "stopped_by": result.stopped_by,
        "mlflow_run_id": run.info.run_id,
    }
    write_json(tuned, paths.table("tuning") / "current.json")
    shown = trials.select(
        "trial",
        "state",
        pl.col("value").round(4),
        "rounds",
        *sorted(set(trials.columns) - {"trial", "state", "value", "rounds", "seconds"}),
    ).with_columns(pl.col(pl.Float64).round(4))
    return dg.MaterializeResult(
        metadata={
            "best_params": dg.MetadataValue.json(result.best_params),
            "best_validation_pr_auc": round(result.best_value, 5),
            "trials": len(result.trials),
            "trials_pruned": sum(t["state"] == "pruned" for t in result.trials),
            "stopped_by": result.stopped_by,
            "tuning_seconds": round(result.seconds, 2),
            "trial_history": dg.MetadataValue.md(markdown_table(shown.to_dicts())),
            "dataset_version": manifest["dataset_version"],
            "mlflow_run": dg.MetadataValue.url(
                mlflow_tracking.run_url(run.info.experiment_id, run.info.run_id)
            ),
        }
    )


class TrainingConfig(dg.Config):
    max_rounds: int = Field(default=1000, ge=1)


def _log_history(mlf, history: dict[str, list[float]]) -> None:
    """Per-iteration metrics in batches (one request per 1,000 values, MLflow's batch limit)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(v), now, step) for key, values in history.items() for step, v in enumerate(values)
    ]
    client = mlf.tracking_client
    run_id = mlf.active_run().info.run_id
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[training_set, fraud_model_hyperparameters],
    group_name=ML_GROUP,
    owners=OWNERS,
    kinds={"lightgbm", "mlflow"},
    description="LightGBM fraud model trained with the tuned parameters, tracked in MLflow and "
    "registered as the new `challenger` version of `fraud-<region>`.",
)
def fraud_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    import mlflow
    from mlflow.models import infer_signature

    region = partition_region(context)
    paths = lake.paths(topology.load(), region)
    mlflow_tracking.preflight()
    manifest = current_training_set(paths)
    tuned = read_json_or_fail(
        paths.table("tuning") / "current.json",
        f"tuned parameters for {region}",
        "materialize `fraud_model_hyperparameters` for this region first",
    )
    if tuned["dataset_version"] != manifest["dataset_version"]:
        raise dg.Failure(
            f"the tuned parameters of {region} were searched on training set {tuned['dataset_version']}, "
            f"the current one is {manifest['dataset_version']}: materialize `fraud_model_hyperparameters` again"
        )
    columns = manifest["feature_columns"]
    frame = load_training_frame(manifest)
    splits = modeling.Splits.from_frame(frame, columns)
    trained = modeling.train(splits, tuned["best_params"], config.max_rounds)
    test = trained.metrics["test"]
    png = curves_png(splits.y["test"], trained.test_scores, f"fraud-{region}: test split")
    importance = modeling.feature_importance(trained.booster)
    # Float columns, as the model sees them (an integer column in a signature rejects missing values).
    example = (
        frame.filter(pl.col("split") == "test").select(pl.col(columns).cast(pl.Float64)).head(5).to_pandas()
    )
    lineage = {
        "dataset_version": manifest["dataset_version"],
        "training_set_as_of": manifest["as_of"],
        **{f"feature_view.{k}": v for k, v in manifest["feature_view_versions"].items()},
        # The exact lake input: each Delta table's version the training set was built from.
        **{f"lake_version.{k}": v for k, v in manifest.get("lake_versions", {}).items()},
    }
    with mlflow_tracking.start_run(
        context, region, "training", paths.root / "mlflow-artifacts", lineage
    ) as mlf:
        run = mlf.active_run()
        mlf.log_params({**trained.params, "metric": ",".join(trained.params["metric"])})
        mlf.log_params({"tuning_mlflow_run_id": tuned["mlflow_run_id"], **lineage})
        mlf.log_metrics(
            {f"{split}_{k}": v for split, values in trained.metrics.items() for k, v in values.items()}
        )
        _log_history(mlf, trained.history)
        with warnings.catch_warnings():
            # A file:// source matches MLflow's local-artifact source twice over; it says so, harmlessly.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset = mlflow.data.from_polars(
                frame.select(*columns, "label", "split"),
                source=Path(manifest["path"]).as_uri(),
                targets="label",
                name=f"training_set-{region}",
                digest=manifest["dataset_version"],
            )
        mlf.log_input(dataset, context="training")
        mlf.log_text(importance.write_csv(), "feature_importance.csv")
        mlf.log_image(png_image(png), "curves/roc_pr_test.png")
        mlf.log_dict(manifest, "training_set_manifest.json")
        signature = infer_signature(example, trained.booster.predict(example.to_numpy()))
        logged = mlflow.lightgbm.log_model(
            trained.booster,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=modeling.model_pip_requirements(),
        )
        # One registry writer per region at a time, whatever launched the run (the queue's
        # per-region limit does not cover in-process runs such as the CLI's).
        with file_lock(paths.root / "registry.lock"):
            version = registry.register_challenger(
                mlflow_tracking.client(),
                region,
                logged.model_uri,
                run.info.run_id,
                {**lineage, "dagster_run_id": context.run_id, "test_pr_auc": f"{test['pr_auc']:.5f}"},
            )
    name = registry.model_name(region)
    replicated = sync_registry_replica(topology.load(), lake, mlflow_tracking.client(), region)
    return dg.MaterializeResult(
        metadata={
            **replicated,
            "registered_model": name,
            "model_version": version,
            "registered_as": registry.CHALLENGER,
            "test_roc_auc": round(test["roc_auc"], 5),
            "test_pr_auc": round(test["pr_auc"], 5),
            "test_brier": round(test["brier"], 6),
            "test_ece": round(test["ece"], 6),
            "test_recall_at_0.5": round(test["recall_at_threshold"], 4),
            "test_precision_at_0.5": round(test["precision_at_threshold"], 4),
            "metrics_by_split": dg.MetadataValue.md(
                markdown_table(
                    [
                        {"split": s, **{k: round(v, 5) for k, v in m.items()}}
                        for s, m in trained.metrics.items()
                    ]
                )
            ),
            "curves": png_markdown(png, f"ROC and PR curves of fraud-{region} v{version}"),
            "top_features": dg.MetadataValue.md(
                markdown_table(importance.head(10).with_columns(pl.col("gain").round(1)).to_dicts())
            ),
            "boosting_rounds": trained.params["num_boost_round"],
            "dataset_version": manifest["dataset_version"],
            "feature_view_versions": dg.MetadataValue.json(manifest["feature_view_versions"]),
            "mlflow_run": dg.MetadataValue.url(
                mlflow_tracking.run_url(run.info.experiment_id, run.info.run_id)
            ),
            "mlflow_model": dg.MetadataValue.url(mlflow_tracking.model_url(name, version)),
        }
    )
