"""What the ML assets share: groups, the region of a run, the training-set manifest, the
registry's synchronous DR copy and the booster cache."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from meridian import registry
from meridian.lake import write_bytes_atomic
from meridian.paths import RegionPaths
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource

ML_GROUP = "ml"


INFERENCE_GROUP = "inference"


OWNERS = ["team:fraud-ml"]


ALL_DAYS_OF_REGION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="region")


def partition_region(context: dg.AssetExecutionContext) -> str:
    return context.partition_key


def read_json_or_fail(path: Path, what: str, fix: str) -> dict:
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


def write_json(payload: dict, path: Path) -> None:
    write_bytes_atomic(json.dumps(payload, indent=2, sort_keys=True, default=str).encode(), path)


def current_training_set(paths: RegionPaths) -> dict:
    return read_json_or_fail(
        paths.table("training_set") / "current.json",
        f"the training set of {paths.region}",
        "materialize `training_set` for this region first",
    )


def load_training_frame(manifest: dict) -> pl.DataFrame:
    return pl.read_parquet(manifest["path"])


_BOOSTERS: dict[tuple[str, str, int], object] = {}


def load_booster(mlflow_tracking: MlflowTrackingResource, region: str, version: int):
    """A registered version's LightGBM booster, cached per process (versions are immutable)."""
    import mlflow

    key = (mlflow_tracking.uri(), region, version)
    if key not in _BOOSTERS:
        mlflow_tracking.client()  # points mlflow's global registry URI at this resource's store
        _BOOSTERS[key] = mlflow.lightgbm.load_model(f"models:/{registry.model_name(region)}/{version}")
    return _BOOSTERS[key]
