"""Deployment profiles: `local` (the embedded default) and `production`.

The profile is chosen once, by MERIDIAN_PROFILE: `platform/definitions.py` builds the
resources for it, and the Dagster instance configuration installed in DAGSTER_HOME comes
from the same variable (SQLite storage for local, PostgreSQL for production).
"""

from __future__ import annotations

import os
from pathlib import Path

from meridian.paths import REPO_ROOT

# Written in the shipped instance configuration where the instance directory belongs.
INSTANCE_DIR_PLACEHOLDER = "{instance_dir}"

INSTANCE_CONFIGS = {
    "local": REPO_ROOT / "platform" / "dagster.yaml",
    "production": REPO_ROOT / "platform" / "dagster.production.yaml",
}


def current_profile() -> str:
    from meridian.settings import settings

    return settings().profile


def install_instance_config(dagster_home: Path, profile: str | None = None) -> Path:
    """Write the profile's instance configuration to DAGSTER_HOME/dagster.yaml, with the
    instance directory in place of `{instance_dir}` (the local event log's directory)."""
    profile = profile or current_profile()
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = INSTANCE_CONFIGS[profile].read_text()
    rendered = text.replace(INSTANCE_DIR_PLACEHOLDER, dagster_home.resolve().as_posix())
    if not target.exists() or target.read_text() != rendered:
        temporary = target.with_name(f".dagster.yaml.{os.getpid()}")
        temporary.write_text(rendered)
        temporary.replace(target)
    return target
