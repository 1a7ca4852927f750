"""Deployment profiles: `local` (the embedded default) and `production`.

The profile is chosen once, by MERIDIAN_PROFILE: `platform/definitions.py` builds the
resources for it, and the Dagster instance configuration installed in DAGSTER_HOME comes
from the same variable (SQLite storage for local, PostgreSQL for production).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from meridian.paths import REPO_ROOT

INSTANCE_CONFIGS = {
    "local": REPO_ROOT / "platform" / "dagster.yaml",
    "production": REPO_ROOT / "platform" / "dagster.production.yaml",
}


def current_profile() -> str:
    from meridian.settings import settings

    return settings().profile


def install_instance_config(dagster_home: Path, profile: str | None = None) -> Path:
    """Copy the profile's instance configuration to DAGSTER_HOME/dagster.yaml."""
    profile = profile or current_profile()
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    shutil.copyfile(INSTANCE_CONFIGS[profile], target)
    return target
