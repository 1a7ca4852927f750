"""Each zone's MLflow artifact bucket, reached with its regions' own credentials (meridian.artifact_store).

The end-to-end proof (a model trained in the production profile lands in its zone's bucket
and nowhere else) is tests/test_production.py's slice; these are the refusals and the routing.
"""

from __future__ import annotations

import pytest

from meridian import artifact_store
from meridian.object_store import ObjectStoreConfigError
from meridian.topology import load_topology

EU_WEST = {
    "MERIDIAN_S3_ENDPOINT_EU_WEST": "http://127.0.0.1:9001",
    "MERIDIAN_S3_ACCESS_KEY_ID_EU_WEST": "AKIAEUWEST",
    "MERIDIAN_S3_SECRET_ACCESS_KEY_EU_WEST": "eu-west-secret",
}


def test_a_regions_experiment_lives_under_its_zones_root_and_is_reached_with_its_own_credentials():
    env = {"MERIDIAN_MLFLOW_ARTIFACTS_EU": "s3://meridian-eu-mlflow/experiments/", **EU_WEST}
    topology = load_topology()
    artifact_store.check_settings(topology, env)
    assert (
        artifact_store.experiment_location(topology, "eu-west", env)
        == "s3://meridian-eu-mlflow/experiments/eu-west"
    )
    assert artifact_store.experiment_location(topology, "us-east", env) is None  # no root for its zone
    found = artifact_store.location_for(
        "s3://meridian-eu-mlflow/experiments/eu-west/3/models/m-1/artifacts", env
    )
    assert (found.region, found.endpoint_url, found.access_key_id) == (
        "eu-west",
        "http://127.0.0.1:9001",
        "AKIAEUWEST",
    )
    assert found.bucket == "meridian-eu-mlflow" and found.prefix.startswith("experiments/eu-west/")
    # A URI under no configured root is MLflow's own business.
    assert artifact_store.location_for("s3://someone-else/x/y", env) is None
    assert artifact_store.location_for("s3://meridian-eu-mlflow/experimentsX/eu-west/1", env) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MERIDIAN_MLFLOW_ARTIFACTS_MARS": "s3://b/p"}, "MERIDIAN_MLFLOW_ARTIFACTS_MARS names no zone"),
        ({"MERIDIAN_MLFLOW_ARTIFACTS_EU": "/mnt/mlflow", **EU_WEST}, "is not an object-store URL"),
        # eu-west trains in the eu zone: without its credentials it could not write there.
        ({"MERIDIAN_MLFLOW_ARTIFACTS_EU": "s3://meridian-eu-mlflow"}, "MERIDIAN_S3_ACCESS_KEY_ID_EU_WEST"),
        (
            {
                "MERIDIAN_MLFLOW_ARTIFACTS_EU": "s3://shared/eu",
                "MERIDIAN_MLFLOW_ARTIFACTS_US": "s3://shared/us",
                **EU_WEST,
                "MERIDIAN_S3_ACCESS_KEY_ID_US_EAST": "k",
                "MERIDIAN_S3_SECRET_ACCESS_KEY_US_EAST": "s",
            },
            "bucket shared is also the artifact bucket of zone eu",
        ),
    ],
)
def test_artifact_roots_that_cannot_work_or_would_mix_zones_are_refused(env, message):
    with pytest.raises(ObjectStoreConfigError, match=message):
        artifact_store.check_settings(load_topology(), env)


def test_an_experiment_created_elsewhere_is_refused_not_written_outside_its_zone(tmp_path, monkeypatch):
    from resources.mlflow import MlflowTrackingResource, MlflowUnavailable

    resource = MlflowTrackingResource(home=str(tmp_path))
    resource.ensure_experiment("eu-west", (tmp_path / "artifacts").as_uri())
    for name, value in {
        "MERIDIAN_MLFLOW_ARTIFACTS_EU": "s3://meridian-eu-mlflow/experiments",
        **EU_WEST,
    }.items():
        monkeypatch.setenv(name, value)
    location = resource.artifact_location("eu-west", tmp_path / "artifacts")
    assert location == "s3://meridian-eu-mlflow/experiments/eu-west"
    with pytest.raises(MlflowUnavailable, match="keeps its artifacts at file://"):
        resource.ensure_experiment("eu-west", location)
