"""The README's main command (`meridian run`, the CLI) end to end: regions in parallel, the summary,
the instance it leaves, the first look at the UI and the serve command after it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from assets.definitions_file import load_definitions_module
from meridian.paths import REPO_ROOT
from tests.helpers import shipped_dbt, trainable_days

pytestmark = pytest.mark.e2e
CLI_DAYS = len(trainable_days(3))


def test_the_readme_main_command_runs_regions_in_parallel_and_records_them_in_the_instance(tmp_path: Path):
    """Pipeline, training (with promotion) and scoring for two regions at once.

    Regressions: two workers creating a brand-new instance (or MLflow store) at once
    stamped its schema twice and it could not be opened afterwards; two regions training
    at once with busy-waiting OpenMP threads took minutes instead of seconds.
    """
    # A data root as users name theirs: a space and a letter outside ASCII (before: every model
    # version was "not a local folder", MLflow's percent-encoded artifact URI read as a path).
    home = tmp_path / "cli home ü"
    env = shipped_dbt({**os.environ, "MERIDIAN_HOME": str(home)})  # dbt as shipped, not the tests' server
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "run",
        "--days",
        str(CLI_DAYS),
        "--regions",
        "ap-southeast,eu-west",
        "--rows-per-day",
        "800",
        "--parallel",
        "2",
        "--trials",
        "3",
        "--score-days",
        "2",
    ]
    run = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # The console holds progress, results and real problems: no library preview/beta warnings.
    assert "PreviewWarning" not in run.stdout + run.stderr and "BetaWarning" not in run.stdout + run.stderr
    for region in ("ap-southeast", "eu-west"):
        assert f"[{region:<13}] dbt build            ok" in run.stdout
    summary = run.stdout.split("Summary")[1]
    lines = {
        line.split()[0]: line.split() for line in summary.splitlines() if line.startswith(("ap-", "eu-"))
    }
    for region in ("ap-southeast", "eu-west"):
        row = lines[region]
        assert row[1] == "ok" and "v1" in row and "promoted" in row, summary
        assert f"[{region:<13}] promotion            ok" in run.stdout
    # The printed commands are copied into a shell as they are: the data root quoted.
    (ui,) = [line for line in run.stdout.splitlines() if "dagster dev -w workspace.yaml" in line]
    words = shlex.split(ui, comments=True)
    assert words[:2] == [f"DAGSTER_HOME={home / 'dagster'}", f"MERIDIAN_HOME={home}"], ui
    (mlflow_ui,) = [line for line in run.stdout.splitlines() if "mlflow ui --backend-store-uri" in line]
    assert shlex.split(mlflow_ui, comments=True)[-1] == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert sorted((r.job_name, r.tags.get("meridian/region", "global")) for r in runs) == sorted(
            [
                *(
                    (job, region)
                    for job in (
                        "regional_pipeline",
                        "ml_training",
                        "batch_inference",
                        "drift_monitoring",
                        "performance_monitoring",
                        "regional_replication",
                    )
                    for region in ("ap-southeast", "eu-west")
                ),
                ("global_governance", "global"),
            ]
        )
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert (
            len(instance.get_materialized_partitions(dg.AssetKey("customer_spend_features"))) == 2 * CLI_DAYS
        )
        assert len(instance.get_materialized_partitions(dg.AssetKey("fraud_predictions"))) == 4
        assert instance.get_materialized_partitions(dg.AssetKey("fraud_model")) == {"ap-southeast", "eu-west"}
    _the_first_look_launches_nothing(home)
    # The full default run ends with the global services: every class replicated to the DR
    # region, and the residency audit passing over every file the run wrote.
    assert "Global: residency audit passed" in run.stdout and "replication breaches: 0" in run.stdout
    audit = json.loads((home / "platform" / "residency_audit.json").read_text())
    assert audit["passed"] and audit["files_scanned"] > 100 and audit["findings"] == []
    assert {"eu", "apac", "global"} <= set(audit["by_zone"])
    catalog = json.loads((home / "platform" / "governance_catalog.json").read_text())
    assert catalog["problems"] == []
    by_asset = {a["asset"]: a for a in catalog["assets"]}
    assert by_asset["raw_transactions"]["classification"] == "personal"
    assert by_asset["raw_transactions"]["replicas"][0]["asset"] == "raw_lake_replica"
    assert by_asset["global_merchant_risk"]["classification"] == "aggregate"
    _the_readme_serve_command_answers_after_the_main_job(home, env)
    # ... and still passes after the service wrote its stream logs.
    from meridian import governance, residency
    from meridian.topology import load_topology

    report = residency.residency_audit(load_topology(), governance.default_policy(), home)
    assert report.passed, report.findings[:5]


def _the_first_look_launches_nothing(home: Path) -> None:
    """After the main job, `dagster dev` starts every sensor and the automation sensor: their
    first evaluations find nothing to catch up on (drift and performance were measured by the
    main job, nothing is left unreplicated, every region is healthy)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv("MERIDIAN_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        module = load_definitions_module()
        defs = module.defs
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home / "dagster")))
        resources = module.build_resources("local")
        requested = {}
        for sensor in defs.sensors:
            if sensor.sensor_type.value in ("RUN_STATUS", "AUTOMATION", "AUTO_MATERIALIZE"):
                continue
            context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
            result = sensor.evaluate_tick(context)
            requested[sensor.name] = [r.partition_key or r.job_name for r in result.run_requests]
        assert all(not r for r in requested.values()), requested
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert automation.total_requested == 0, [
            (r.asset_key.to_user_string(), r.true_subset.size)
            for r in automation.results
            if r.true_subset.size
        ]


def _the_readme_serve_command_answers_after_the_main_job(home: Path, env: dict[str, str]) -> None:
    """`meridian serve` on what `meridian run` left: scores eu-west's customers with eu-west's
    champion, answers 404 for an ap-southeast customer asked at eu-west, and on SIGTERM
    writes its stream log before it exits."""
    import signal
    import socket
    import urllib.error
    import urllib.request

    from meridian.paths import region_paths
    from meridian.stream_log import iter_all, stream_dir
    from meridian.topology import load_topology

    def known(region: str) -> tuple[str, str]:
        paths = region_paths(load_topology().region(region), home)
        with duckdb.connect(str(paths.warehouse), read_only=True) as con:
            return con.sql("select customer_id, merchant_id from stg_transactions limit 1").fetchall()[0]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--regions",
            "ap-southeast,eu-west",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def post(region: str, customer: str, merchant: str) -> tuple[int, dict]:
        body = {
            "transaction_id": f"readme-{region}",
            "customer_id": customer,
            "merchant_id": merchant,
            "amount": 120,
            "currency": "EUR",
            "channel": "ecom",
            "country": "BR",
        }
        request = urllib.request.Request(
            f"{base}/v1/{region}/score", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    ready = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise AssertionError("meridian serve was not ready within 90 s")
        assert {r: v["model_version"] for r, v in ready.items()} == {"ap-southeast": 1, "eu-west": 1}
        status, body = post("eu-west", *known("eu-west"))
        assert status == 200 and body["model_name"] == "fraud-eu-west" and body["variant"] == "champion"
        status, body = post("eu-west", *known("ap-southeast"))
        assert status == 404 and "unknown in eu-west" in body["detail"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    logged = list(iter_all(stream_dir(region_paths(load_topology().region("eu-west"), home).root)))
    assert [e["transaction_id"] for e in logged] == ["readme-eu-west"]


def test_the_main_command_refuses_an_unknown_region_before_any_work(tmp_path: Path):
    env = {**os.environ, "MERIDIAN_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "cli", "run", "--regions", "eu-west,mars-north,us-west"]
    run = subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 2
    assert "unknown or standby region(s) 'mars-north', 'us-west'" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "home" / "regions").exists()
