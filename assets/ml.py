"""The ML lifecycle per region: training set → tuning → model → promotion → batch predictions.

Training assets are partitioned by region and read every day of their region's feature
views and labels; batch predictions are partitioned region × day like the rest of the
lake. MLflow (resources.mlflow) tracks every tuning and training run and holds the
registry `fraud-<region>` with the aliases `champion` and `challenger` (meridian.registry).

Files each asset writes in the region's lake (all replaced atomically):
- `training_set/as_of=<day>/data.parquet` and `training_set/current.json`;
- `tuning/current.json` (best parameters and the trial history);
- `model_decisions/<timestamp>.json` (each promotion decision with its evidence);
- `predictions/day=<day>/data.parquet`.
"""

import base64
import hashlib
import json
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from assets.features import VIEWS, view_asset_key
from assets.partitions import REGION_DAY_PARTITIONS, REGION_PARTITIONS, RegionFailures, days_by_region
from meridian import modeling, registry
from meridian.feature_store import complete_from, history_start
from meridian.lake import write_bytes_atomic, write_parquet_atomic
from meridian.locks import file_lock
from meridian.paths import RegionPaths
from meridian.report import markdown_table
from meridian.training_set import build_training_set, rows_without_features, warmup_excluded_rows
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource

ML_GROUP = "ml"
INFERENCE_GROUP = "inference"
OWNERS = ["team:fraud-ml"]
VIEW_TUPLE = tuple(VIEWS.values())
ALL_DAYS_OF_REGION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="region")
# A scored row whose feature windows are complete (meridian.feature_store.complete_from).
FEATURES_COMPLETE = "features_complete"


def _region(context: dg.AssetExecutionContext) -> str:
    return context.partition_key


# Each version hashes its definition and dbt SQL; the views are fixed at import.
VIEW_VERSIONS = {view.name: view.version for view in VIEW_TUPLE}


def _read_json(path: Path, what: str, fix: str) -> dict:
    if not path.exists():
        raise dg.Failure(f"{what} is missing ({path}): {fix}")
    return json.loads(path.read_text())


def sync_registry_replica(topo, lake: RegionalLakeResource, client, region: str) -> dict[str, object]:
    """Synchronous replication of the registry: the change is acknowledged (the step
    succeeds) only when the DR region holds the aliases and the aliased models' files."""
    from meridian import dr

    try:
        done = dr.sync_model_registry(topo, lake.root(), region, client)
    except Exception as error:
        raise dg.Failure(
            f"{registry.model_name(region)}: the registry change is not acknowledged: its DR copy in "
            f"{topo.region(region).dr_region} failed: {error}"
        ) from error
    return {"dr_region": done.target_region, "dr_registry_replica_version": done.result.version}


def _write_json(payload: dict, path: Path) -> None:
    write_bytes_atomic(json.dumps(payload, indent=2, sort_keys=True, default=str).encode(), path)


def png_markdown(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def current_training_set(paths: RegionPaths) -> dict:
    return _read_json(
        paths.table("training_set") / "current.json",
        f"the training set of {paths.region}",
        "materialize `training_set` for this region first",
    )


def load_training_frame(manifest: dict) -> pl.DataFrame:
    return pl.read_parquet(manifest["path"])


# ---------------------------------------------------------------- training set


class TrainingSetConfig(dg.Config):
    as_of: str | None = None  # "YYYY-MM-DD"; default: the day after the last labelled day
    validation_share: float = 0.15
    test_share: float = 0.15


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[
        dg.AssetDep("labelled_events", partition_mapping=ALL_DAYS_OF_REGION),
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
    region = _region(context)
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
        "feature_columns": modeling.feature_columns(VIEW_TUPLE),
        "splits": {row["split"]: {k: str(v) for k, v in row.items()} for row in by_split.to_dicts()},
        "rows_with_default_features": defaults,
        "features_complete_from": warm_from.isoformat(),
        "rows_excluded_warming_up": warming_up,
        "dagster_run_id": context.run_id,
    }
    _write_json(manifest, paths.table("training_set") / "current.json")
    return dg.MaterializeResult(
        metadata={
            "dataset_version": dataset_version,
            "as_of": as_of.isoformat(),
            "rows": frame.height,
            "positive_rate": round(float(frame["label"].mean()), 5),
            "splits": dg.MetadataValue.md(markdown_table(by_split.to_dicts())),
            "time_range": f"{frame['event_time'].min()} → {frame['event_time'].max()}",
            "feature_view_versions": dg.MetadataValue.json(VIEW_VERSIONS),
            "rows_with_default_features": dg.MetadataValue.json(defaults),
            "features_complete_from": warm_from.isoformat(),
            "rows_excluded_warming_up": warming_up,
            "path": dg.MetadataValue.path(str(path)),
        },
        data_version=dg.DataVersion(dataset_version),
    )


# ---------------------------------------------------------------- tuning


class TuningConfig(dg.Config):
    n_trials: int = 20
    timeout_seconds: float = 180.0
    max_rounds: int = 400
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
    region = _region(context)
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
    _write_json(tuned, paths.table("tuning") / "current.json")
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


# ---------------------------------------------------------------- training and registration


class TrainingConfig(dg.Config):
    max_rounds: int = 1000


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

    region = _region(context)
    paths = lake.paths(topology.load(), region)
    mlflow_tracking.preflight()
    manifest = current_training_set(paths)
    tuned = _read_json(
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
    png = modeling.curves_png(splits.y["test"], trained.test_scores, f"fraud-{region}: test split")
    importance = modeling.feature_importance(trained.booster)
    # Float columns, as the model sees them (an integer column in a signature rejects missing values).
    example = (
        frame.filter(pl.col("split") == "test").select(pl.col(columns).cast(pl.Float64)).head(5).to_pandas()
    )
    lineage = {
        "dataset_version": manifest["dataset_version"],
        "training_set_as_of": manifest["as_of"],
        **{f"feature_view.{k}": v for k, v in manifest["feature_view_versions"].items()},
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
            trained.booster, name="model", signature=signature, input_example=example
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


def png_image(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))


# ---------------------------------------------------------------- promotion


class PromotionConfig(dg.Config):
    min_pr_auc_gain: float = 0.005  # challenger must beat the champion's test PR-AUC by this much
    calibration_tolerance: float = 0.005  # ... and its ECE may exceed the champion's by at most this


_BOOSTERS: dict[tuple[str, str, int], object] = {}


def load_booster(mlflow_tracking: MlflowTrackingResource, region: str, version: int):
    """A registered version's LightGBM booster, cached per process (versions are immutable)."""
    import mlflow

    key = (mlflow_tracking.uri(), region, version)
    if key not in _BOOSTERS:
        mlflow_tracking.client()  # points mlflow's global registry URI at this resource's store
        _BOOSTERS[key] = mlflow.lightgbm.load_model(f"models:/{registry.model_name(region)}/{version}")
    return _BOOSTERS[key]


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, config: PromotionConfig
) -> tuple[bool, str]:
    """The promotion rule: better PR-AUC by the margin and no worse calibration (ECE) beyond the tolerance."""
    if champion is None:
        return True, "no champion yet: the first model is promoted"
    gain = challenger["pr_auc"] - champion["pr_auc"]
    ece_delta = challenger["ece"] - champion["ece"]
    if gain < config.min_pr_auc_gain:
        return False, f"PR-AUC gain {gain:+.4f} is below the required margin {config.min_pr_auc_gain:+.4f}"
    if ece_delta > config.calibration_tolerance:
        return False, (
            f"PR-AUC gain {gain:+.4f} passes, but calibration is worse: ECE {ece_delta:+.4f} beyond the "
            f"tolerance {config.calibration_tolerance:.4f}"
        )
    return (
        True,
        f"PR-AUC gain {gain:+.4f} ≥ {config.min_pr_auc_gain:+.4f} and ECE change {ece_delta:+.4f} within tolerance",
    )


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
    region = _region(context)
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
    _write_json(record, paths.table("model_decisions") / f"{at:%Y%m%dT%H%M%S%f}.json")
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


# ---------------------------------------------------------------- batch inference


def prediction_features(
    con: duckdb.DuckDBPyConnection, region, day: str, warm_from: datetime | None = None
) -> pl.DataFrame:
    """The day's transactions with request features, point-in-time view features and
    `features_complete`. `warm_from` (the region's `complete_from`), when the caller scores many
    days of one region, saves scanning the region's history once per day."""
    from meridian.feature_store import retrieve

    entity_sql = modeling.transaction_entities_sql(region, "stg_transactions", f"t.event_day = date '{day}'")
    start = datetime.fromisoformat(day)
    # The day's transactions only need feature rows from (day − TTL) to the day's end.
    frame = retrieve(con, entity_sql, "event_time", VIEW_TUPLE, (start, start + timedelta(days=1))).pl()
    return with_features_complete(frame, warm_from or complete_from(history_start(con), VIEW_TUPLE))


def with_features_complete(frame: pl.DataFrame, warm_from: datetime | None) -> pl.DataFrame:
    """`features_complete`: the row's every window is covered by the region's history."""
    complete = pl.lit(False) if warm_from is None else pl.col("event_time") >= pl.lit(warm_from)
    return frame.with_columns(complete.alias(FEATURES_COMPLETE))


def score_frame(booster, frame: pl.DataFrame, model: str, version: int) -> pl.DataFrame:
    """Scores for every row of `frame`, with the model and feature-view versions that produced them.

    Rows are ordered by (event time, transaction id): DuckDB returns the retrieval in no
    particular order, and a re-run must write the same file byte for byte.
    """
    frame = frame.sort("event_time", "transaction_id")
    scores = booster.predict(modeling.design_matrix(frame, booster.feature_name()), num_threads=2)
    return frame.select(
        "transaction_id", "customer_id", "merchant_id", "event_time", "event_day", FEATURES_COMPLETE
    ).with_columns(
        pl.Series("score", scores, dtype=pl.Float64),
        pl.lit(model).alias("model_name"),
        pl.lit(version, dtype=pl.Int32).alias("model_version"),
        *(pl.lit(v).alias(f"{name}_view_version") for name, v in VIEW_VERSIONS.items()),
    )


@dg.asset(
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep("stg_transactions"),
        *(dg.AssetDep(view_asset_key(v.name)) for v in VIEW_TUPLE),
        dg.AssetDep(fraud_model_promotion, partition_mapping=ALL_DAYS_OF_REGION),
    ],
    group_name=INFERENCE_GROUP,
    owners=OWNERS,
    kinds={"lightgbm", "parquet"},
    description="Every transaction of the day scored by the region's champion, with the model "
    "version and feature-view versions, in the region's lake.",
)
def fraud_predictions(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    topo = topology.load()
    client = None
    per_day = []
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region, days in run_days.items():
        with failures.region(region):
            client = client or mlflow_tracking.client()
            name = registry.model_name(region)
            version = registry.alias_version(client, name, registry.CHAMPION)
            if version is None:
                raise dg.Failure(
                    f"{name} has no champion: run the `ml_training` job for {region} (training promotes the first model)"
                )
            booster = load_booster(mlflow_tracking, region, version)
            paths = lake.paths(topo, region)
            with (
                file_lock(paths.warehouse_lock, shared=True),
                duckdb.connect(str(paths.warehouse), read_only=True) as con,
            ):
                warm_from = complete_from(history_start(con), VIEW_TUPLE)
                for day in days:
                    started = time.perf_counter()
                    features = prediction_features(con, topo.region(region), day, warm_from)
                    retrieved = time.perf_counter()
                    scored = score_frame(booster, features, name, version)
                    predicted = time.perf_counter()
                    written = lake.write_partition(paths, "predictions", day, scored)
                    row = {
                        "region": region,
                        "day": day,
                        "rows": written.rows,
                        "model_version": version,
                        "mean_score": round(float(scored["score"].mean()), 5) if scored.height else 0.0,
                        "rows_warming_up": int((~scored[FEATURES_COMPLETE]).sum()),
                        "flagged_at_0.5": int((scored["score"] >= 0.5).sum()),
                        "retrieval_s": round(retrieved - started, 3),
                        "scoring_s": round(predicted - retrieved, 3),
                        "write_s": round(time.perf_counter() - predicted, 3),
                    }
                    per_day.append(row)
                    context.log_event(
                        dg.AssetObservation(
                            asset_key=context.asset_key,
                            partition=dg.MultiPartitionKey({"region": region, "day": day}),
                            metadata={k: v for k, v in row.items() if k not in ("region", "day")},
                        )
                    )
    failures.raise_if_any([context.asset_key], run_days)
    total = sum(r["rows"] for r in per_day)
    return dg.MaterializeResult(
        metadata={
            "run_total_rows": total,
            "run_total_flagged_at_0.5": sum(r["flagged_at_0.5"] for r in per_day),
            "model_versions": dg.MetadataValue.json(
                sorted({f"{r['region']}:v{r['model_version']}" for r in per_day})
            ),
            "feature_view_versions": dg.MetadataValue.json(VIEW_VERSIONS),
            "per_day": dg.MetadataValue.md(markdown_table(per_day)),
        }
    )


# ---------------------------------------------------------------- rollback


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
    at = datetime.now(UTC)
    _write_json(
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
