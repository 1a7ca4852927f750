"""Driving dagster-daemon, `meridian health-loop` and the dagster CLI against an instance (tests and
the failover benchmark)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from meridian.paths import REPO_ROOT
from meridian.profiles import install_instance_config
from tests.helpers import shipped_dbt

WORKSPACE = REPO_ROOT / "workspace.yaml"  # the embedded default: each process loads the code itself


def launch(
    job: str, region: str, first: str, last: str, env: dict[str, str], workspace: Path = WORKSPACE
) -> None:
    key = lambda day: str(dg.MultiPartitionKey({"region": region, "day": day}))  # noqa: E731
    tags = {
        ASSET_PARTITION_RANGE_START_TAG: key(first),
        ASSET_PARTITION_RANGE_END_TAG: key(last),
        "meridian/region": region,
    }
    config = {"resources": {"source": {"config": {"rows_per_day": 600}}}}  # as the slice test: one generator
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "launch",
            "-w",
            str(workspace),
            "-j",
            job,
            "--tags",
            json.dumps(tags),
            "--config-json",
            json.dumps(config),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def wait(instance, predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)  # one indexed query on the instance: cheap to ask often
    raise AssertionError(f"timed out waiting for {what}; the instance's runs:\n{_runs_table(instance)}")


def failure_of(instance, run_id: str) -> str:
    """What failed in a run: each failed step's error, as the UI shows it."""
    events = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    )
    parts = []
    for event in events:
        data = event.dagster_event.event_specific_data
        error = getattr(data, "error", None)
        parts.append(f"{event.step_key or 'run'}: {error.to_string() if error else event.message}")
    return "\n".join(parts)


def _runs_table(instance) -> str:
    """Every run the instance holds, newest first: what a timeout was stuck behind."""
    lines = []
    for record in instance.get_run_records(limit=40):
        run = record.dagster_run
        tags = {
            k: v
            for k, v in run.tags.items()
            if k.startswith(("meridian/", "dagster/partition", "dagster/sensor"))
        }
        lines.append(f"  {run.run_id[:8]} {run.job_name} {run.status.value} {tags}")
    return "\n".join(lines) or "  (none)"


def start_daemon(
    env: dict[str, str], log_path: Path, workspace: Path = WORKSPACE
) -> tuple[subprocess.Popen, object]:
    """dagster-daemon as shipped, on `workspace`: from workspace.yaml (the embedded default) it
    starts the code servers whose run workers run the runs, with dbt as shipped too; on a
    workspace naming a code server (`code_server`), that server's run workers do."""
    log = open(log_path, "w")  # noqa: SIM115 - closed by _stop_daemon
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=REPO_ROOT,
        env=shipped_dbt(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return daemon, log


def stop_daemon(daemon: subprocess.Popen, log) -> None:
    os.killpg(daemon.pid, 15)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, 9)
    log.close()


@contextlib.contextmanager
def code_server(env: dict[str, str], workdir: Path) -> Iterator[Path]:
    """The code location served as the production profile serves it (platform/deploy/helm:
    `dagster api grpc --python-file platform/definitions.py`, beside the daemon), yielding a
    workspace file that names it: the daemon and every `dagster job launch` reach this one
    server over gRPC, and its run workers run the runs (with the dbt `env` names). With
    workspace.yaml each of those processes started a code server of its own, loading the
    definitions again (3.9 s of CPU each). On exit the server is stopped with everything it
    started (run workers and their dbt), as a pod is."""
    import socket

    from dagster._grpc.client import DagsterGrpcClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(workdir / "code-server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            *("api", "grpc", "--python-file", "platform/definitions.py", "--working-directory", "."),
            *("--host", "127.0.0.1", "--port", str(port), "--location-name", "meridian"),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client, deadline = DagsterGrpcClient(port=port, host="127.0.0.1"), time.monotonic() + 120
        while True:
            assert server.poll() is None, (workdir / "code-server.log").read_text()[-3000:]
            try:
                client.ping("")
                break
            except Exception:  # not serving yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        workspace = workdir / "workspace.yaml"
        grpc_server = {"host": "127.0.0.1", "port": port, "location_name": "meridian"}
        # JSON is YAML: the workspace file dagster reads.
        workspace.write_text(json.dumps({"load_from": [{"grpc_server": grpc_server}]}))
        yield workspace
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 9)
        server.wait(timeout=30)
        log.close()


def kill_tree(pid: int) -> None:
    """A crashed pod: the worker and everything it started (dbt) die at once."""
    import psutil

    root = psutil.Process(pid)
    for process in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def shipped_local_env(home: Path) -> dict[str, str]:
    """The environment of the daemon and `meridian health-loop --home HOME` as shipped on the
    embedded default: the instance in HOME/dagster with the shipped dagster.yaml."""
    dagster_home = home / "dagster"
    install_instance_config(dagster_home, "local")
    return {
        **os.environ,
        "MERIDIAN_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "MERIDIAN_PROFILE": "local",
    }


def start_health_loop(env: dict[str, str], home: Path, log_path: Path) -> tuple[subprocess.Popen, object]:
    """`meridian health-loop` probing every second, as shipped."""
    log = open(log_path, "w")  # noqa: SIM115 - closed by stop_health_loop
    loop = subprocess.Popen(
        [sys.executable, "-m", "cli", "health-loop", "--interval", "1", "--home", str(home)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return loop, log


def stop_health_loop(loop: subprocess.Popen, log) -> None:
    loop.terminate()
    loop.wait(timeout=30)
    log.close()
