"""Shared test helpers: a small regional lake without Dagster, dbt on the command line."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
from meridian.paths import REPO_ROOT, RegionPaths
from meridian.topology import Region
from meridian.validation import validate_labels, validate_transactions

DBT_DIR = REPO_ROOT / "dbt_project"


def write_lake(paths: RegionPaths, region: Region, cfg: GeneratorConfig, days: list[date]) -> None:
    for day in days:
        tx = validate_transactions(generate_transactions(cfg, region, day).rows, day, region)
        labels = validate_labels(generate_labels(cfg, region, day).rows, day)
        paths.lake_table("raw_transactions").replace(tx.accepted, day=day, origin="source")
        paths.lake_table("raw_labels").replace(labels.accepted, day=day)


def day_range(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def dbt(
    args: list[str], dbt_vars: dict[str, object], target: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run dbt as Dagster does: run-scoped settings (region, lake_root, warehouse_path,
    min_day, max_day) as MERIDIAN_DBT_* environment variables, the project's own vars as
    --vars, so dbt's partial parsing holds across the calls that share `target`.

    Each call is `dbt` on the command line in a process of its own, forked from a process that
    has already imported dbt (tests.dbt_fork_server) rather than started cold."""
    import os

    from meridian.feature_store import RUN_SCOPED_DBT_VARS, dbt_run_env

    run_scoped = {k: v for k, v in dbt_vars.items() if k in RUN_SCOPED_DBT_VARS}
    project = {k: v for k, v in dbt_vars.items() if k not in RUN_SCOPED_DBT_VARS}
    cmd = [
        *args,
        "--profiles-dir",
        str(DBT_DIR),
        "--project-dir",
        str(DBT_DIR),
        "--target-path",
        str(target),
        *(["--vars", json.dumps(project)] if project else []),
    ]
    env = {**(env if env is not None else os.environ), **dbt_run_env(run_scoped)}
    target.mkdir(parents=True, exist_ok=True)
    out = target / "dbt-console.log"
    with out.open("w") as console:
        done = subprocess.run(
            [dbt_fork_server(), *cmd],
            cwd=DBT_DIR,
            env=env,
            stdout=console,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return subprocess.CompletedProcess(["dbt", *cmd], done.returncode, out.read_text(errors="replace"), "")


_SERVER: list[subprocess.Popen] = []
_LAUNCHER: list[str] = []
_SERVER_LOCK = threading.Lock()


def dbt_fork_server() -> str:
    """The `dbt` launcher of this process's tests.dbt_fork_server, started on first use (it
    exits with the process)."""
    import tempfile

    from tests.dbt_fork_server import start

    with _SERVER_LOCK:
        if not _SERVER or _SERVER[0].poll() is not None:
            server, launcher = start(Path(tempfile.mkdtemp(prefix="dbt-fork-server-")))
            _SERVER[:], _LAUNCHER[:] = [server], [str(launcher)]
        return _LAUNCHER[0]


def shipped_dbt(env: dict[str, str]) -> dict[str, str]:
    """`env` without MERIDIAN_DBT_EXECUTABLE: the processes started with it run dbt as shipped
    (the `dbt` beside the interpreter), not through this process's fork server."""
    return {k: v for k, v in env.items() if k != "MERIDIAN_DBT_EXECUTABLE"}


# The regional assets every end-to-end run must materialize, ingestion to features.
REGIONAL_ASSETS = (
    "raw_transactions",
    "quarantined_transactions",
    "raw_labels",
    "stg_transactions",
    "customer_spend_features",
    "merchant_risk_features",
    "labelled_events",
    "customer_spend_view",
    "merchant_risk_view",
)


@contextmanager
def serving(app) -> Iterator[str]:
    """The scoring app on uvicorn on a free loopback port, in a thread; yields its base URL.
    On exit the server stops and the app drains its pushes and stream log."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.shutdown()


def trainable_days(matured_days: int, start: date = date(2026, 1, 1), after: int = 0) -> list[str]:
    """Days from `start` that give `matured_days` days of trainable rows: the feature views'
    warm-up (rows before it are never trained on), those days, then their labels' maturity,
    then `after` more days (to score, say)."""
    from meridian.run_window import LABEL_MATURITY_DAYS, warmup_days

    n = warmup_days() + matured_days + LABEL_MATURITY_DAYS + after
    return [(start + timedelta(days=i)).isoformat() for i in range(n)]


def lake_day(lake: Path, table: str, day: str | date, origin: str = "source") -> pl.DataFrame:
    """One day of a lake Delta table under the folder `lake` (the source's share, where the
    table has origins), without its partition columns; empty when the day holds nothing."""
    from meridian.lake_tables import LakeLocation

    lake_table = LakeLocation.local(lake).table(table)
    where = {"day": day, **({"origin": origin} if "origin" in lake_table.partition_by else {})}
    frame = lake_table.read(where=where)
    assert frame is not None, f"no Delta table {table} under {lake}"
    return frame.drop(lake_table.partition_by)


def put_lake_day(
    lake: Path, table: str, day: str | date, frame: pl.DataFrame, origin: str = "source"
) -> None:
    """Replace one day of a lake Delta table under `lake` (as a writer that skipped validation would)."""
    from meridian.lake_tables import LakeLocation

    lake_table = LakeLocation.local(lake).table(table)
    lake_table.replace(frame, day=day, **({"origin": origin} if "origin" in lake_table.partition_by else {}))
