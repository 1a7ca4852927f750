"""platform/deploy/: the Kubernetes deployment on paper, checked against the code."""

from __future__ import annotations

import re

import pytest
import yaml

from meridian.paths import REPO_ROOT
from meridian.settings import region_env_suffix
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
    assert custom["config"]["dequeue_interval_seconds"] == 1
    local = yaml.safe_load((REPO_ROOT / "platform" / "dagster.yaml").read_text())
    production = yaml.safe_load((REPO_ROOT / "platform" / "dagster.production.yaml").read_text())
    for instance in (local, production, _load("dagster.k8s.yaml")):
        assert instance["run_coordinator"]["class"] == "RegionRunCoordinator"
        assert instance["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
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
    topology = load_topology()
    for name in module.PRODUCTION_ENV:
        if name == "MERIDIAN_REDIS_URL":  # or a Redis of its own for every active region
            assert name in env or all(
                f"MERIDIAN_REDIS_URL_{region_env_suffix(r)}" in env for r in topology.active_region_names
            )
            continue
        assert name in env, f"{name} is needed by the production profile but not set in the Helm values"
    # Each region's Redis and its replica as the chart's `meridian.redis` describes them.
    redis = values["meridian"]["redis"]
    for region in topology.active_region_names:
        assert env[f"MERIDIAN_REDIS_URL_{region_env_suffix(region)}"]["value"] == redis[region]["primary"]
        assert (
            env[f"MERIDIAN_REDIS_REPLICA_URL_{region_env_suffix(region)}"]["value"]
            == redis[region]["replica"]
        )
    # Every environment variable the settings read (meridian/settings.py, the one place) is set there too.
    source = (REPO_ROOT / "meridian" / "settings.py").read_text()
    read = set(re.findall(r'get\("([A-Z_]+)"\)', source)) - {
        "MERIDIAN_PROFILE",
        "MERIDIAN_TOPOLOGY",
    }
    read -= {"MERIDIAN_ONLINE_STORE"}  # local profile only: production is always Redis
    read -= {"MERIDIAN_REDIS_URL"}  # the shared Redis: the chart gives every region its own (above)
    read -= {"MERIDIAN_DBT_EXECUTABLE"}  # a wrapper of one's own; the image's dbt is the default
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
        assert region.compute is not None
        assert meridian["regions"][region.name]["nodeSelector"] == region.compute.labels
        assert meridian["regions"][region.name]["zone"] == region.zone
        assert meridian["lake"][region.name].startswith("s3://")
    assert set(meridian["mlflow"]["artifactRoots"]) == {z.name for z in topology.zones}
    for region in topology.active_regions:
        assert region.name in meridian["redis"]
        # The live replica is in the region's DR region (its namespace), never another zone's.
        assert (
            meridian["redis"][region.name]["replica"]
            .split("/")[2]
            .split(":")[0]
            .endswith("." + topology.dr_region(region.name).name)
        )


def test_the_charts_settings_load_as_the_production_profile(monkeypatch, tmp_path):
    """The user deployment's environment, as the chart sets it, passes the checks the definitions
    make at load (a Redis per region, each replicated within its zone)."""
    (deployment,) = _load("helm/values.yaml")["dagster-user-deployments"]["deployments"]
    for item in deployment["env"]:
        monkeypatch.setenv(item["name"], item.get("value", "postgresql+psycopg2://dagster@db:5432/dagster"))
    monkeypatch.delenv("MERIDIAN_REDIS_URL", raising=False)
    monkeypatch.setenv("MERIDIAN_EXECUTOR", "in_process")
    # The image's path; in this checkout the same folder is here.
    monkeypatch.setenv("MERIDIAN_DBT_PROFILES_DIR", str(DEPLOY / "dbt"))
    monkeypatch.setenv("MERIDIAN_HOME", str(tmp_path / "home"))
    resources = _definitions().build_resources("production")
    topology = load_topology()
    for region in topology.active_region_names:
        link = resources["online_store"].replica_link(region)
        assert link is not None and link.primary_url != link.replica_url
    # Each zone's MLflow artifact root, as `meridian.mlflow.artifactRoots` names its bucket.
    from meridian import artifact_store

    roots = _load("helm/values.yaml")["meridian"]["mlflow"]["artifactRoots"]
    for region in topology.active_region_names:
        location = artifact_store.experiment_location(topology, region)
        assert location == f"{roots[topology.zone_of(region)]}/experiments/{region}"


def test_dbt_has_a_production_target_on_a_distributed_engine():
    profiles = yaml.safe_load((DEPLOY / "dbt" / "profiles.yml").read_text())["meridian"]["outputs"]
    assert profiles["production"]["type"] == "trino"
    assert profiles["local"]["type"] == "duckdb"


# ---------------------------------------------------------------- the production executor

_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def _production_definitions(monkeypatch):
    for name, value in {
        "MERIDIAN_PROFILE": "production",
        "DAGSTER_PG_URL": "postgresql+psycopg2://dagster@127.0.0.1:5432/dagster",
        "MERIDIAN_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MERIDIAN_REDIS_URL": "redis://127.0.0.1:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MERIDIAN_EXECUTOR", raising=False)
    return _definitions()


def test_the_production_profile_runs_each_step_as_a_kubernetes_job_on_its_regions_node_pool(
    monkeypatch, tmp_path
):
    """No cluster runs here: the executor is built and configured as the daemon's run worker
    would, Dagster validates its config, and the step Job dagster-k8s would submit is
    constructed for each region and read back."""
    import dagster as dg
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.executor.init import InitExecutorContext
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.executor import _K8S_EXECUTOR_CONFIG_SCHEMA
    from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job

    from instance.k8s_executor import PLACEMENT_FIELD, RegionalK8sStepHandler, placed_container_context
    from meridian.placement import step_placements

    module = _production_definitions(monkeypatch)
    job = module.defs.resolve_job_def("regional_pipeline")
    executor = job.executor_def
    assert executor.name == "k8s_regional"
    assert set(_K8S_EXECUTOR_CONFIG_SCHEMA) < set(executor.config_schema.as_field().config_type.fields)
    # The local profile is unchanged: one process.
    monkeypatch.setenv("MERIDIAN_EXECUTOR", "in_process")
    assert module.build_executor("production") is dg.in_process_executor

    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(_KUBECONFIG)
    processed = dg.validate_run_config(
        job,
        {"execution": {"config": {"kubeconfig_file": str(kubeconfig), "load_incluster_config": False}}},
    )
    config = processed["execution"]["k8s_regional"]
    topology = load_topology()
    placements = step_placements(topology)
    assert (
        config[PLACEMENT_FIELD].keys() == placements.keys() == {r.name for r in topology.regions} | {"global"}
    )
    with dg.DagsterInstance.ephemeral() as instance:
        built = executor.executor_creation_fn(
            InitExecutorContext(
                job=InMemoryJob(job), executor_def=executor, executor_config=config, instance=instance
            )
        )
    assert isinstance(built._step_handler, RegionalK8sStepHandler)

    # What an op tag or the executor's own step config says is overridden by the region.
    elsewhere = K8sContainerContext(
        namespace="meridian-runs",
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {
                "pod_spec_config": {
                    "node_selector": {"meridian/region": "us-east"},
                    "priority_class_name": "high",
                }
            }
        ),
    )
    job_config = DagsterK8sJobConfig(
        job_image="registry.internal/meridian:1.0.0", dagster_home="/opt/dagster"
    )

    def pod(tags):
        context = placed_container_context(elsewhere, tags, config[PLACEMENT_FIELD])
        manifest = construct_dagster_k8s_job(job_config, ["dagster"], "step", context.run_k8s_config)
        return manifest.spec.template.spec

    for region in topology.regions:
        for tags in (
            {"meridian/region": region.name},
            {"dagster/partition": f"2026-01-01|{region.name}"},
            {"dagster/partition/region": region.name},
        ):
            spec = pod(tags)
            assert spec.node_selector == region.compute.labels, (tags, spec.node_selector)
            resources = spec.containers[0].resources
            assert resources.requests == {"cpu": region.compute.cpu, "memory": region.compute.memory}
            assert resources.limits == {"memory": region.compute.memory_limit}
            assert spec.priority_class_name == "high"  # the rest of the step's config is kept
    # A run of no single region (the global services, a range over two regions) lands on the
    # global pool, never on a region's.
    assert pod({}).node_selector == topology.global_compute.labels
    assert pod({"dagster/partition": "us-east"}).node_selector == {"meridian/region": "us-east"}


def test_a_bad_placement_fails_when_the_definitions_load_naming_what_is_wrong(monkeypatch, tmp_path):
    import dagster as dg

    from instance.k8s_executor import regional_k8s_job_executor
    from meridian.placement import step_placements
    from meridian.topology import TopologyError

    # Dagster's config system checks the placements when the executor is defined.
    with pytest.raises(dg.DagsterInvalidConfigError, match="pod_spec_confi"):
        regional_k8s_job_executor({"us-east": {"pod_spec_confi": {"node_selector": {"a": "b"}}}})
    # The topology checks what Dagster's permissive pod config does not: quantities, selectors.
    source = (REPO_ROOT / "platform" / "regions.yaml").read_text()
    for bad, message in (
        ('cpu: "1", memory: 4Gi', "cpu: one, memory: 4Gi"),
        ("node_selector: {meridian/region: eu-west}", "node_selector: {}"),
    ):
        assert bad in source
        broken = tmp_path / "regions.yaml"
        broken.write_text(source.replace(bad, message, 1))
        with pytest.raises(TopologyError, match="compute"):
            load_topology(broken)
    # A region without `compute:` cannot fall back to another pool.
    without = tmp_path / "without.yaml"
    without.write_text(
        "\n".join(line for line in source.splitlines() if not line.strip().startswith("compute:"))
    )
    with pytest.raises(ValueError, match="have no `compute:`"):
        step_placements(load_topology(without))
    monkeypatch.setenv("MERIDIAN_TOPOLOGY", str(without))
    with pytest.raises(ValueError, match="have no `compute:`"):
        _production_definitions(monkeypatch)
