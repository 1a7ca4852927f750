"""The dbt CLI resource that builds each region's DuckDB warehouse."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster_dbt import DagsterDbtProjectPreparer, DbtCliInvocation, DbtCliResource, DbtProject
from packaging import version

from meridian.settings import settings

# dagster-dbt hands dbt a copy of os.environ taken when `cli` starts the process: the
# variables of one invocation are set around that call, one invocation at a time.
_ENVIRONMENT = threading.Lock()


def dbt_executable() -> str:
    """MERIDIAN_DBT_EXECUTABLE if set (meridian.settings), else dbt from this interpreter's
    environment, so an unactivated venv still works."""
    chosen = settings().dbt_executable
    if chosen:
        return chosen
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


class WarehouseDbtResource(DbtCliResource):
    """DbtCliResource without the fixed costs Meridian's runs do not use.

    - dagster-dbt runs `dbt --version` once per resource instance, that is once per run:
      2.5 s here, and dbt then asks the package index for the latest release. Our dbt is
      the dbt-core package installed beside this interpreter (the profile's lake plugin,
      `meridian.dbt_lake`, is imported from this environment, whatever command starts
      dbt), so its version is read from the package metadata instead.
    - dagster-dbt builds a dbt adapter inside the run worker on every invocation (1.5 s:
      it loads the profile, the project and the adapter plugin) for its optional
      `fetch_row_counts`/`fetch_column_metadata`. Meridian reads row counts and columns
      itself once dbt has exited (assets/transforms.py), so no adapter is built.
    - `cli_with_env` passes run-scoped settings as environment variables rather than
      --vars, which would make dbt re-parse the project on every run.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        try:
            return version.parse(importlib.metadata.version("dbt-core"))
        except importlib.metadata.PackageNotFoundError:
            return super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None

    def cli_with_env(self, args: Sequence[str], env: Mapping[str, str], **kwargs: Any) -> DbtCliInvocation:
        """`cli(args, **kwargs)` with `env` added to the dbt process's environment only."""
        with _ENVIRONMENT:
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                return self.cli(args, **kwargs)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


class WarehouseDbtPreparer(DagsterDbtProjectPreparer):
    """Parses the project with this environment's dbt.

    dagster-dbt's own preparer looks for `dbt` on PATH, which an unactivated virtual
    environment (`.venv/bin/dagster dev`) does not have.
    """

    def _prepare_manifest(self, project: DbtProject) -> None:
        resource = WarehouseDbtResource(
            project_dir=project, profiles_dir=str(project.profiles_dir), dbt_executable=dbt_executable()
        )
        resource.cli(["parse", "--quiet"], target_path=project.target_path).wait()
