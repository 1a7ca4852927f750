"""Shared fixtures: every test that writes data gets its own MERIDIAN_HOME."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import hypothesis  # noqa: F401
import pytest

# hypothesis is imported here, at start-up, on purpose: when it is first imported by its
# pytest plugin at session end (a run without property tests), pytest's assertion
# rewriting of its modules trips CPython 3.11.7's "AST constructor recursion depth
# mismatch" SystemError after the threaded end-to-end tests.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config):
    """Each test process runs dbt through its own tests.dbt_fork_server (MERIDIAN_DBT_EXECUTABLE,
    inherited by the processes it starts): dbt as on the command line, a fresh process per
    invocation, without dbt's 3 s start-up. Tests of the README's main command and of the
    daemon start their processes with `tests.helpers.shipped_dbt(env)`: dbt as shipped there.
    The xdist controller runs no test and starts none."""
    import os

    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        from tests.helpers import dbt_fork_server

        os.environ["MERIDIAN_DBT_EXECUTABLE"] = dbt_fork_server()


@pytest.fixture
def meridian_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "meridian-home"
    home.mkdir()
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir()
    return home


@pytest.fixture(scope="session")
def topology():
    from meridian.topology import load_topology

    return load_topology()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A throw-away redis-server (Debian's package; .ci/run installs it) on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


_KEY_SPACES = iter(range(1_000_000))


def open_test_store(request, tmp_path: Path):
    """A fresh online store on the backend the test is parametrized with (`sqlite` or `redis`)."""
    from meridian.online_redis import RedisOnlineStore
    from meridian.online_sqlite import SqliteOnlineStore

    if request.param == "sqlite":
        return SqliteOnlineStore(tmp_path / "online.db")
    # A fresh key space per test on the shared server.
    return RedisOnlineStore(request.getfixturevalue("redis_url"), f"test-{next(_KEY_SPACES)}")


@pytest.fixture(params=["sqlite", "redis"])
def online_store_pair(request, tmp_path):
    """Two online stores on one backend: a region's (eu-west) and its DR site's (eu-central)."""
    from meridian.online_redis import RedisOnlineStore
    from meridian.online_sqlite import SqliteOnlineStore

    if request.param == "sqlite":
        stores = (
            SqliteOnlineStore(tmp_path / "primary.db", origin="eu-west"),
            SqliteOnlineStore(tmp_path / "dr.db", origin="eu-central"),
        )
    else:
        url, n = request.getfixturevalue("redis_url"), next(_KEY_SPACES)
        stores = (
            RedisOnlineStore(url, f"pair-{n}-primary", origin="eu-west"),
            RedisOnlineStore(url, f"pair-{n}-dr", origin="eu-central"),
        )
    yield stores
    for store in stores:
        store.close()


@pytest.fixture(scope="module")
def production(tmp_path_factory, redis_url):
    """Postgres (two databases), the MLflow server on one of them, the production environment:
    one set per test module that asks for it (the two production modules run side by side)."""
    from meridian.profiles import install_instance_config
    from tests.object_stores import EU_ARTIFACT_BUCKET, start_region_store
    from tests.servers import MlflowServer, Postgres

    pg = Postgres().init()
    pg.start()
    root = tmp_path_factory.mktemp("production")
    (root / "artifacts").mkdir()
    server = None
    # The eu zone's MLflow artifact bucket, on eu-west's own S3 endpoint with its credentials
    # (meridian.artifact_store); the other zones keep the server's served artifacts.
    eu_store = start_region_store("eu-west", root)
    eu_store.client().create_bucket(Bucket=EU_ARTIFACT_BUCKET)
    try:
        pg.create_database("dagster")
        dagster_db = pg.url("dagster", "psycopg2")
        pg.create_database("mlflow")
        server = MlflowServer(pg.url("mlflow", "psycopg2"), root / "artifacts")
        home = root / "home"
        env = {
            "MERIDIAN_PROFILE": "production",
            "MERIDIAN_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "DAGSTER_PG_URL": dagster_db,
            "MERIDIAN_MLFLOW_TRACKING_URI": server.url,
            "MERIDIAN_REDIS_URL": redis_url,
            # The production profile on one machine: no Kubernetes cluster runs here, so runs
            # execute in their run worker (tests/test_deploy.py checks the k8s executor).
            "MERIDIAN_EXECUTOR": "in_process",
            "MERIDIAN_MLFLOW_ARTIFACTS_EU": f"s3://{EU_ARTIFACT_BUCKET}/experiments",
            **{k: v for k, v in eu_store.env().items() if not k.startswith("MERIDIAN_LANDING_URL_")},
        }
        install_instance_config(home / "dagster", "production")
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield {"pg": pg, "mlflow": server, "home": home, "env": env, "eu_store": eu_store}
    finally:
        eu_store.kill()
        if server is not None:
            server.stop()
        pg.close()


# The most expensive modules first (seconds on a quiet 2-core machine, from --durations):
# with xdist's --dist loadfile (scripts/test.sh) a worker takes a whole module at a time,
# so starting the longest ones first keeps one late long module from setting the wall time.
HEAVY_FIRST = (
    "test_production_daemon",
    "test_cli_run",
    "test_residency_on_the_wire",
    "test_monitoring",
    "test_dbt_incremental",
    "test_production",
    "test_ml",
    "test_serving",
    "test_failover",
    "test_e2e",
    "test_lake_on_object_storage",
    "test_lake_tables",
    "test_drift",
    "test_ui",
    "test_feature_store",
    # Mostly waiting on servers (a replica's catch-up, a frozen endpoint's probes): started before
    # the quick modules so that the wait overlaps other work instead of ending the run.
    "test_landing_s3",
    "test_redis_replica",
    "test_online_store",
    "test_global_views",
    "test_leftovers",
    "test_definitions",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: module order kept
