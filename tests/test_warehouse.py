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
