"""Cost pricing (meridian.cost) without Dagster: every figure is rate × quantity from regions.yaml."""

from __future__ import annotations

import pytest

from meridian import cost
from meridian.topology import load_topology


def test_storage_transfer_and_compute_are_priced_at_each_regions_rates(tmp_path):
    topo = load_topology()
    eu, us = topo.region("eu-west"), topo.region("us-east")
    stored = {r.name: 0 for r in topo.regions} | {"eu-west": 2_000_000_000}
    report = cost.price(
        topo,
        stored=stored,
        global_stored=500_000_000,
        replicated={("eu-west", "eu-central"): 3_000_000_000},
        compute={
            ("eu-west", "fraud_model"): 7200.0,
            ("us-east", "training_set"): 3600.0,
            ("global", "cost_report"): 36.0,
        },
    )
    rows = {r["region"]: r for r in report.per_region}
    assert rows["eu-west"]["storage_usd_month"] == pytest.approx(2 * eu.cost.storage_gb_month)
    assert rows["eu-west"]["transfer_usd"] == pytest.approx(3 * eu.cost.transfer_gb)
    assert rows["eu-west"]["compute_usd"] == pytest.approx(2 * eu.cost.compute_vcpu_hour)
    assert rows["us-east"]["compute_usd"] == pytest.approx(us.cost.compute_vcpu_hour)
    assert rows["global"]["stored_gb"] == 0.5
    assert rows["global"]["compute_usd"] == pytest.approx(0.01 * topo.global_cost.compute_vcpu_hour)
    assert report.per_pair == [
        {
            "source": "eu-west",
            "target": "eu-central",
            "zone": "eu",
            "replicated_gb": 3.0,
            "transfer_usd": pytest.approx(3 * eu.cost.transfer_gb),
        }
    ]
    assert [a["step"] for a in report.per_asset] == ["fraud_model", "training_set", "cost_report"]
    assert report.total_usd == pytest.approx(sum(r["total_usd"] for r in report.per_region))
    assert report.unpriced == []


def test_global_compute_without_a_global_rate_is_reported_unpriced_not_guessed():
    topo = load_topology().model_copy(update={"global_cost": None})
    report = cost.price(topo, {r.name: 0 for r in topo.regions}, 0, {}, {("global", "residency_audit"): 90.0})
    assert report.per_region[-1]["compute_usd"] == 0.0
    assert report.unpriced == ["global compute 90 s: no global_cost in regions.yaml"]


def test_dir_bytes_counts_every_file_below(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 10)
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 32)
    assert cost.dir_bytes(tmp_path) == 42
