"""The dbt CLI resource that builds each region's DuckDB warehouse."""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from functools import cached_property
from pathlib import Path

from dagster_dbt import DagsterDbtProjectPreparer, DbtCliResource, DbtProject
from packaging import version


def dbt_executable() -> str:
    """dbt from this interpreter's environment, so an unactivated venv still works."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


class WarehouseDbtResource(DbtCliResource):
    """DbtCliResource that knows its dbt version without asking the executable.

    dagster-dbt runs `dbt --version` once per resource instance, that is once per run:
    2.5 s here, and dbt then asks the package index for the latest release. Our dbt is
    the dbt-core package installed beside this interpreter, so its version is read from
    the package metadata instead.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        if Path(self.dbt_executable).parent == Path(sys.executable).parent:
            return version.parse(importlib.metadata.version("dbt-core"))
        return super()._cli_version


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
