"""The dbt resource: run-scoped settings reach one dbt process and nothing else."""

from __future__ import annotations

import os

from meridian.paths import REPO_ROOT
from resources.warehouse import WarehouseDbtResource, dbt_executable


class _Probe(WarehouseDbtResource):
    """Records the environment `cli` would hand to dbt (dagster-dbt copies os.environ there)."""

    def cli(self, args, **kwargs):  # type: ignore[override]
        return dict(os.environ)


def test_run_settings_are_in_the_dbt_process_environment_only(monkeypatch):
    monkeypatch.setenv("MERIDIAN_DBT_REGION", "set-before")
    monkeypatch.delenv("MERIDIAN_DBT_MIN_DAY", raising=False)
    probe = _Probe(project_dir=str(REPO_ROOT / "dbt_project"), dbt_executable=dbt_executable())
    seen = probe.cli_with_env(
        ["build"], {"MERIDIAN_DBT_REGION": "eu-west", "MERIDIAN_DBT_MIN_DAY": "2026-01-02"}
    )
    assert (seen["MERIDIAN_DBT_REGION"], seen["MERIDIAN_DBT_MIN_DAY"]) == ("eu-west", "2026-01-02")
    # Afterwards the process's own environment is as it was.
    assert os.environ["MERIDIAN_DBT_REGION"] == "set-before"
    assert "MERIDIAN_DBT_MIN_DAY" not in os.environ


def test_the_dbt_command_is_a_setting_and_defaults_to_the_dbt_beside_the_interpreter(monkeypatch, tmp_path):
    """MERIDIAN_DBT_EXECUTABLE (a wrapper running this environment's dbt-core) reaches the
    definitions' dbt resource, and one that does not exist is refused when they load; unset,
    it is the `dbt` of this interpreter's environment."""
    import sys
    from pathlib import Path

    import pydantic
    import pytest

    from assets.definitions_file import load_definitions_module

    wrapper = tmp_path / "dbt-with-credentials"
    wrapper.write_text('#!/bin/sh\nexec dbt "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("MERIDIAN_DBT_EXECUTABLE", str(wrapper))
    assert load_definitions_module().build_resources("local")["dbt"].dbt_executable == str(wrapper)
    monkeypatch.setenv("MERIDIAN_DBT_EXECUTABLE", str(tmp_path / "no-such-dbt"))
    with pytest.raises(pydantic.ValidationError, match="no-such-dbt"):
        load_definitions_module().build_resources("local")
    monkeypatch.delenv("MERIDIAN_DBT_EXECUTABLE")
    assert dbt_executable() == str(Path(sys.executable).parent / "dbt")


def test_the_tests_dbt_launcher_is_dbt_on_the_command_line(tmp_path):
    """tests.dbt_fork_server's launcher, which the in-process tests' resources run: dbt's own
    output on the caller's stdout and stderr, and dbt's exit status (click's 2 for a usage error)."""
    import subprocess

    from tests.helpers import dbt_fork_server

    version = subprocess.run([dbt_fork_server(), "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "installed:" in version.stdout, version
    wrong = subprocess.run(
        [dbt_fork_server(), "no-such-command"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert wrong.returncode == 2 and "no-such-command" in wrong.stderr, wrong
