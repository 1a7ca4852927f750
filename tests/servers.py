"""Real servers the production-profile tests start on loopback: PostgreSQL and an MLflow server.

PostgreSQL comes from Debian's packages (scripts/ensure-servers.sh installs them when
missing); each fixture owns a fresh cluster in a temporary folder, trust auth on
127.0.0.1 only, and stops it at the end. PostgreSQL refuses to run as root, so as root
the cluster is owned by and run as the `postgres` system user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindir() -> Path:
    try:
        found = Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
        if (found / "pg_ctl").exists():
            return found
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/ensure-servers.sh")
    return candidates[-1].parent


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<port>."""

    def __init__(self):
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="meridian-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        os.chmod(self.root, 0o755)
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> Postgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n"
            )
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "restart")

    def create_database(self, name: str) -> None:
        self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", f"create database {name}"
        )

    def url(self, database: str, driver: str = "") -> str:
        """`driver="psycopg2"` for SQLAlchemy users (Dagster, MLflow): SQLAlchemy 2.1 defaults to psycopg 3."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` with a PostgreSQL backend store and served artifacts, as in production."""

    def __init__(self, backend_uri: str, artifacts: Path):
        self.artifacts = artifacts
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(artifacts.parent / "mlflow-server.log", "w")  # noqa: SIM115 - closed in stop()
        mlflow = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--backend-store-uri",
                backend_uri,
                "--serve-artifacts",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # MLflow 3's job execution (GenAI judges, trace roll-ups) starts about ten Huey
            # consumer processes that poll all the time (300 MB and ~5 % of a core each);
            # Meridian uses none of it.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(artifacts.parent / 'mlflow-server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health within 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.log.close()


class RedisServer:
    """A redis-server of its own on 127.0.0.1:<port> (Debian's package), which a drill can kill
    (SIGKILL), freeze (SIGSTOP/SIGCONT) and start again on the same port and data.

    `durable`: every write is in its append-only file before it is acknowledged, so a
    server killed and started again holds everything it acknowledged (the primary of a
    drill: the writes its replica never got are still there to count at failback)."""

    def __init__(self, root: Path, *, durable: bool = False):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/ensure-servers.sh")
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.durable = durable
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on {self.port} did not start: {(self.dir / 'redis.log').read_text()[-2000:]}"
                )
            time.sleep(0.02)
        client.close()
        return self

    def load_online_rows(self, region_root: Path, region: str) -> int:
        """Copy a region's SQLite online store (what the embedded default built) into this
        server's key space for the region, stamps kept: the rows online_features writes in
        production. Returns the rows written."""
        from meridian.feature_views import feature_views
        from meridian.online_redis import RedisOnlineStore
        from meridian.online_sqlite import SqliteOnlineStore

        source = SqliteOnlineStore(region_root / "online" / "online_store.db", create=False)
        target = RedisOnlineStore(self.url, region)
        try:
            return sum(target.write(source.iter_rows(view.name)).applied for view in feature_views())
        finally:
            source.close()
            target.close()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the outage of a drill (no shutdown, no final save)."""
        self.signal(9)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
