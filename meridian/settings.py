"""Meridian's settings, read from the environment in this one place.

The Dagster definitions, the scoring service, the CLI and the partitions all take their
settings from `settings()`, so a process configured for a profile sees the same store,
tracking server and topology wherever it looks. It reads the environment when called (not
at import), so a process that sets MERIDIAN_HOME before loading anything, as the CLI and
the tests do, is honoured.

| variable | what | default |
|---|---|---|
| MERIDIAN_PROFILE | `local` (embedded default) or `production` | local |
| MERIDIAN_HOME | data root of the embedded default | `.meridian/` in the checkout |
| MERIDIAN_TOPOLOGY | regions file | platform/regions.yaml |
| MERIDIAN_ONLINE_STORE | `sqlite` or `redis` (production: always redis) | sqlite |
| MERIDIAN_REDIS_URL | the online store's Redis, for every region without its own | none (required in production unless every active region has its own) |
| MERIDIAN_REDIS_URL_<REGION> | region REGION's own Redis (`EU_WEST` for eu-west) | MERIDIAN_REDIS_URL |
| MERIDIAN_REDIS_REPLICA_URL_<REGION> | the Redis in REGION's DR region that replicates REGION's (`REPLICAOF`; meridian.redis_replication) | none: the DR copy of the online store is a snapshot |
| MERIDIAN_MLFLOW_TRACKING_URI | MLflow tracking server | SQLite under MERIDIAN_HOME (required in production) |
| MERIDIAN_MLFLOW_UI_URL | where links to MLflow point | the tracking URI, else http://127.0.0.1:5000 |
| MERIDIAN_ALERT_WEBHOOK_URL | alert webhook | none |
| MERIDIAN_DBT_PROFILES_DIR, MERIDIAN_DBT_TARGET | dbt profile and target | dbt_project/, local |
| MERIDIAN_DBT_EXECUTABLE | the command that runs dbt: this environment's dbt-core, through a wrapper of your own (the tests' fork server, one that fetches credentials) | the `dbt` beside the interpreter |
| DAGSTER_PG_URL | the production Dagster instance's PostgreSQL | none (required in production) |
| MERIDIAN_EXECUTOR | how a run executes its steps: `in_process` or `k8s` (each step a Kubernetes Job on its region's node pool) | local: in_process; production: k8s |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("local", "production")
ONLINE_BACKENDS = ("sqlite", "redis")
EXECUTORS = ("in_process", "k8s")
# What the production profile cannot run without; checked when the definitions load, so
# `dagster definitions validate` names the missing setting instead of a run failing later.
PRODUCTION_REQUIRED = {
    "MERIDIAN_MLFLOW_TRACKING_URI": "the MLflow tracking server, e.g. http://mlflow:5000",
    "MERIDIAN_REDIS_URL": "the online store, e.g. redis://redis:6379/0, or MERIDIAN_REDIS_URL_<REGION> per region",
    "DAGSTER_PG_URL": "the Dagster instance's PostgreSQL (platform/dagster.production.yaml)",
}


class SettingsError(ValueError):
    """The environment does not describe a usable deployment; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    profile: str
    home: Path
    home_override: str | None  # MERIDIAN_HOME as set; None: resources resolve the default when they run
    topology_path: str | None
    online_store: str
    redis_url: str | None
    mlflow_tracking_uri: str | None
    mlflow_ui_url: str
    alert_webhook_url: str | None
    dbt_profiles_dir: str | None
    dbt_executable: str | None
    dbt_target: str
    dagster_pg_url: str | None
    executor: str
    # region -> URL, from MERIDIAN_REDIS_URL_<REGION> / MERIDIAN_REDIS_REPLICA_URL_<REGION>
    # (checked against the topology by meridian.redis_replication.check_redis_settings).
    redis_urls: Mapping[str, str] = field(default_factory=dict)
    redis_replica_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.profile == "production"

    def require_production_settings(self) -> None:
        given = {
            "MERIDIAN_MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            # Regions with a Redis of their own need no shared one (checked per region at load).
            "MERIDIAN_REDIS_URL": self.redis_url or bool(self.redis_urls),
            "DAGSTER_PG_URL": self.dagster_pg_url,
        }
        missing = [f"{name} ({what})" for name, what in PRODUCTION_REQUIRED.items() if not given[name]]
        if missing:
            raise SettingsError("MERIDIAN_PROFILE=production needs: " + "; ".join(missing))


def _env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return value or None


REDIS_URL_PREFIX = "MERIDIAN_REDIS_URL_"
REDIS_REPLICA_URL_PREFIX = "MERIDIAN_REDIS_REPLICA_URL_"


def region_env_suffix(region: str) -> str:
    """`eu-west` -> `EU_WEST`: how a region is named in a per-region variable."""
    return region.upper().replace("-", "_")


def _per_region(prefix: str, environ: Mapping[str, str]) -> dict[str, str]:
    """{region: value} of every set `<prefix><REGION>` variable (`EU_WEST` -> `eu-west`)."""
    return {
        name.removeprefix(prefix).lower().replace("_", "-"): value
        for name, value in environ.items()
        if name.startswith(prefix) and value
    }


def unusable_local_path(path: str) -> str | None:
    """Why a local folder cannot hold a region's warehouse, or None. dbt-duckdb reads the
    warehouse's path as a URL to name its database: a `#` or `?` in it cuts the name there
    (`/data/run #1/regions/eu-west/warehouse.duckdb` names the database "run "), and every
    dbt build of the region failed ('Catalog Error: "ünï" is not a catalog or schema' for a
    data root `/tmp/my home/ünï #1`)."""
    found = sorted(set(path) & {"#", "?"})
    if found:
        return (
            f"holds {' and '.join(repr(c) for c in found)}, which dbt-duckdb reads as part of a URL: "
            f"choose a path without {'it' if len(found) == 1 else 'them'}"
        )
    return None


def settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process, from `environ` (default: the process environment)."""
    from meridian.paths import REPO_ROOT

    def get(name: str) -> str | None:
        return _env(name, environ)

    profile = get("MERIDIAN_PROFILE") or "local"
    if profile not in PROFILES:
        raise SettingsError(f"MERIDIAN_PROFILE={profile!r} is not a known profile; choose one of {PROFILES}")
    # The production profile's online store is Redis wherever it is read: the definitions
    # write it and the service must read the same one.
    online = "redis" if profile == "production" else (get("MERIDIAN_ONLINE_STORE") or "sqlite")
    if online not in ONLINE_BACKENDS:
        raise SettingsError(f"MERIDIAN_ONLINE_STORE={online!r}: choose one of {ONLINE_BACKENDS}")
    home = Path(get("MERIDIAN_HOME") or REPO_ROOT / ".meridian").resolve()
    if problem := unusable_local_path(str(home)):
        raise SettingsError(f"the data root {str(home)!r} (MERIDIAN_HOME) {problem}")
    tracking = get("MERIDIAN_MLFLOW_TRACKING_URI")
    # Production runs on Kubernetes: each step a Job pinned to its region's node pool. A
    # production deployment on plain machines (or these tests) sets MERIDIAN_EXECUTOR.
    executor = get("MERIDIAN_EXECUTOR") or ("k8s" if profile == "production" else "in_process")
    if executor not in EXECUTORS:
        raise SettingsError(f"MERIDIAN_EXECUTOR={executor!r}: choose one of {EXECUTORS}")
    return Settings(
        profile=profile,
        home=home,
        home_override=get("MERIDIAN_HOME"),
        topology_path=get("MERIDIAN_TOPOLOGY"),
        online_store=online,
        redis_url=get("MERIDIAN_REDIS_URL"),
        mlflow_tracking_uri=tracking,
        mlflow_ui_url=get("MERIDIAN_MLFLOW_UI_URL") or tracking or "http://127.0.0.1:5000",
        alert_webhook_url=get("MERIDIAN_ALERT_WEBHOOK_URL"),
        dbt_profiles_dir=get("MERIDIAN_DBT_PROFILES_DIR"),
        dbt_executable=get("MERIDIAN_DBT_EXECUTABLE"),
        dbt_target=get("MERIDIAN_DBT_TARGET") or "local",
        dagster_pg_url=get("DAGSTER_PG_URL"),
        executor=executor,
        redis_urls=_per_region(REDIS_URL_PREFIX, os.environ if environ is None else environ),
        redis_replica_urls=_per_region(REDIS_REPLICA_URL_PREFIX, os.environ if environ is None else environ),
    )
