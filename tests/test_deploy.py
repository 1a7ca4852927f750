"""platform/deploy/: the Kubernetes deployment on paper, checked against the code."""

from __future__ import annotations

import re

import yaml

from meridian.paths import REPO_ROOT
from meridian.topology import load_topology

DEPLOY = REPO_ROOT / "platform" / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _definitions():
    from assets.definitions_file import load_definitions_module

    return load_definitions_module()


def test_every_deploy_file_loads():
    for path in DEPLOY.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    assert isinstance(yaml.safe_load((DEPLOY / "dbt" / "profiles.yml").read_text()), dict)


def test_the_helm_values_run_on_kubernetes_with_postgres_and_per_region_pools():
    values = _load("helm/values.yaml")
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["meridian"]["executor"] == "k8s_job_executor"
    assert values["postgresql"]["postgresqlDatabase"] == "dagster"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "CustomRunCoordinator"
    custom = coordinator["config"]["customRunCoordinator"]
    assert (custom["module"], custom["class"]) == ("instance.run_coordinator", "RegionRunCoordinator")
    limits = custom["config"]["tag_concurrency_limits"]
    local = yaml.safe_load((REPO_ROOT / "platform" / "dagster.yaml").read_text())
    production = yaml.safe_load((REPO_ROOT / "platform" / "dagster.production.yaml").read_text())
    for instance in (local, production, _load("dagster.k8s.yaml")):
        assert instance["run_coordinator"]["class"] == "RegionRunCoordinator"
        assert [(x["key"], x["limit"]) for x in limits] == [
            (x["key"], x["limit"]) for x in instance["run_coordinator"]["config"]["tag_concurrency_limits"]
        ]
    assert "postgres" in production["storage"]
    k8s = _load("dagster.k8s.yaml")
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher" and k8s["run_launcher"]["module"] == "dagster_k8s"
    assert k8s["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"


def test_every_setting_the_production_profile_needs_is_configured_for_the_user_deployment():
    values = _load("helm/values.yaml")
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e for e in deployment["env"]}
    assert env["MERIDIAN_PROFILE"]["value"] == "production"
    module = _definitions()
    for name in module.PRODUCTION_ENV:
        assert name in env, f"{name} is needed by the production profile but not set in the Helm values"
    # Every environment variable the settings read (meridian/settings.py, the one place) is set there too.
    source = (REPO_ROOT / "meridian" / "settings.py").read_text()
    read = set(re.findall(r'get\("([A-Z_]+)"\)', source)) - {
        "MERIDIAN_PROFILE",
        "MERIDIAN_TOPOLOGY",
    }
    read -= {"MERIDIAN_ONLINE_STORE"}  # local profile only: production is always Redis
    assert len(read) >= 8, read  # the pattern still finds what the settings read
    missing = sorted(read - set(env))
    assert not missing, f"read by meridian/settings.py but not configured in helm/values.yaml: {missing}"
    resources = module.build_resources("local")
    assert set(resources) == {
        "topology",
        "lake",
        "source",
        "dbt",
        "online_store",
        "alerting",
        "mlflow_tracking",
    }
    assert deployment["dagsterApiGrpcArgs"][:2] == ["--python-file", "platform/definitions.py"]


def test_every_region_has_a_node_pool_a_lake_in_its_zone_and_mlflow_has_a_root_per_zone():
    topology = load_topology()
    meridian = _load("helm/values.yaml")["meridian"]
    for region in topology.regions:
        assert meridian["regions"][region.name]["nodeSelector"] == {"meridian/region": region.name}
        assert meridian["regions"][region.name]["zone"] == region.zone
        assert meridian["lake"][region.name].startswith("s3://")
    assert set(meridian["mlflow"]["artifactRoots"]) == {z.name for z in topology.zones}
    for region in topology.active_regions:
        assert region.name in meridian["redis"]


def test_dbt_has_a_production_target_on_a_distributed_engine():
    profiles = yaml.safe_load((DEPLOY / "dbt" / "profiles.yml").read_text())["meridian"]["outputs"]
    assert profiles["production"]["type"] == "trino"
    assert profiles["local"]["type"] == "duckdb"
