"""The global views write where the lake resource points and price what they report honestly."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest

from assets import cost as cost_assets
from assets.cost import cost_report
from assets.platform_health import platform_health
from meridian.performance import champion_test_pr_auc
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource


def _resources(root):
    return {
        "topology": RegionTopologyResource(),
        "lake": RegionalLakeResource(home=str(root)),
        "mlflow_tracking": MlflowTrackingResource(home=str(root)),
        "alerting": AlertingResource(path=str(root / "alerts.jsonl")),
    }


def test_platform_health_writes_under_the_lake_resources_root_not_meridian_home(tmp_path, monkeypatch):
    """Regression: it wrote under MERIDIAN_HOME whatever root the lake resource was given."""
    elsewhere, root = tmp_path / "env-home", tmp_path / "lake-root"
    monkeypatch.setenv("MERIDIAN_HOME", str(elsewhere))
    with dg.instance_for_test() as instance:
        assert dg.materialize([platform_health], resources=_resources(root), instance=instance).success
    assert (root / "platform" / "health.json").exists()
    assert not (elsewhere / "platform" / "health.json").exists()


def test_platform_health_shows_a_region_whose_storage_is_lost_instead_of_failing(tmp_path):
    """A provisioned region whose root is gone is a row saying so; the view still lands, and
    shows each region's deployment and the last experiment that ended."""
    from meridian.dr import provision
    from meridian.paths import region_paths
    from meridian.topology import load_topology

    root = tmp_path / "home"
    paths = region_paths(load_topology().region("eu-west"), root)
    provision(root, paths)
    shutil.rmtree(paths.root)  # the volume is lost
    with dg.instance_for_test() as instance:
        result = dg.materialize([platform_health], resources=_resources(root), instance=instance)
    assert result.success
    rows = {r["region"]: r for r in json.loads((root / "platform" / "health.json").read_bytes())["regions"]}
    assert "storage root" in rows["eu-west"]["storage"] and "unreachable" in rows["eu-west"]["storage"]
    assert rows["us-east"]["storage"] == "ok" and rows["us-east"]["deployment"] == "champion"
    assert rows["us-east"]["last_ended_experiment"] == "none"
    assert not paths.root.exists()  # the view created nothing


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"test_pr_auc": "0.91234"}, 0.91234),
        ({}, None),
        ({"test_pr_auc": "nan"}, None),
        ({"test_pr_auc": "7"}, None),
    ],
)
def test_a_champion_without_a_valid_test_pr_auc_has_no_baseline(tags, expected):
    """Regression: a missing tag read as NaN, and `live < NaN - drop` is False: the check passed."""
    assert champion_test_pr_auc(tags) == expected


def test_the_cost_report_prices_global_compute_from_regions_yaml_and_pages_through_history(
    tmp_path, monkeypatch
):
    """Regression: global steps were priced at a hard-coded 0.05 USD per vCPU-hour and the
    history queries stopped at their first page without saying so."""
    from meridian.topology import load_topology

    monkeypatch.setattr(cost_assets, "HISTORY_PAGE", 2)  # five earlier runs: three pages
    root = tmp_path / "root"
    rate = load_topology().global_cost.compute_vcpu_hour
    with dg.instance_for_test() as instance:
        for _ in range(5):
            assert dg.materialize([platform_health], resources=_resources(root), instance=instance).success
        seconds = sum(
            s.end_time - s.start_time
            for r in instance.get_runs()
            for s in instance.get_run_step_stats(r.run_id)
            if s.step_key == "platform_health"
        )
        result = dg.materialize([cost_report], resources=_resources(root), instance=instance)
    assert result.success
    doc = json.loads((root / "platform" / "cost_report.json").read_text())
    (health,) = [a for a in doc["per_asset"] if a["step"] == "platform_health"]
    assert health["region"] == "global" and health["compute_s"] == pytest.approx(seconds, abs=0.1)
    assert health["compute_usd"] == pytest.approx(seconds / 3600 * rate, abs=1e-6)
    (global_row,) = [r for r in doc["per_region"] if r["region"] == "global"]
    assert global_row["compute_usd"] == pytest.approx(seconds / 3600 * rate, abs=1e-6)
    assert doc["unpriced"] == []
