from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from meridian.topology import DEFAULT_TOPOLOGY_PATH, TopologyError, load_topology, parse_topology

RAW = yaml.safe_load(DEFAULT_TOPOLOGY_PATH.read_text())


def _region(raw: dict, name: str) -> dict:
    return next(r for r in raw["regions"] if r["name"] == name)


def test_shipped_topology_has_three_active_regions_each_with_a_same_zone_standby(topology):
    assert len(topology.active_regions) >= 3
    assert len({r.zone for r in topology.active_regions}) >= 3
    for region in topology.active_regions:
        dr = topology.region(region.dr_region)
        assert dr.role == "standby"
        assert dr.zone == region.zone
        assert (
            region.cost.storage_gb_month > 0
            and region.cost.transfer_gb > 0
            and region.cost.compute_vcpu_hour > 0
        )


def test_unknown_zone_is_refused_with_the_region_and_zone_named():
    raw = copy.deepcopy(RAW)
    _region(raw, "eu-west")["zone"] = "mars"
    with pytest.raises(TopologyError, match=r"region 'eu-west' names unknown zone 'mars'"):
        parse_topology(raw)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        # Before: accepted, and the pipeline failed mid-run computing the local hour.
        ("timezone", "Mars/Olympus", r"regions\.2\.timezone: .*unknown IANA time zone 'Mars/Olympus'"),
        ("timezone", "europe/dublin", r"unknown IANA time zone 'europe/dublin'"),
        ("timezone", "../../etc/passwd", r"unknown IANA time zone"),
        # Before: accepted, and its transactions passed validation with no USD amount.
        (
            "currencies",
            ["EUR", "XYZ"],
            r"regions\.2\.currencies: .*no USD rate for \['XYZ'\] \(known: AUD, CHF",
        ),
        # Before: accepted as a home country no transaction can have.
        ("countries", ["IE", "XX"], r"regions\.2\.countries: .*not ISO 3166-1 alpha-2 codes: \['XX'\]"),
        # dbt-duckdb reads the warehouse path as a URL: a '#' cut its database name (every build failed)
        (
            "storage_root",
            "regions/eu #west",
            r"regions\.2\.storage_root: .*holds '#', which dbt-duckdb reads",
        ),
        ("storage_root", "/data/eu?west", r"regions\.2\.storage_root: .*holds '\?'"),
    ],
)
def test_a_region_names_a_real_time_zone_priced_currencies_and_iso_countries(field, value, message):
    raw = copy.deepcopy(RAW)
    assert raw["regions"][2]["name"] == "eu-west"
    _region(raw, "eu-west")[field] = value
    with pytest.raises(TopologyError, match=message):
        parse_topology(raw)


def test_dr_pair_across_zones_is_refused_because_personal_data_would_leave_its_zone():
    raw = copy.deepcopy(RAW)
    _region(raw, "eu-west")["dr_region"] = "us-west"
    with pytest.raises(TopologyError, match=r"DR pair 'eu-west' -> 'us-west' crosses zones \(eu -> us\)"):
        parse_topology(raw)


def test_read_replica_across_zones_is_refused():
    raw = copy.deepcopy(RAW)
    _region(raw, "ap-southeast")["read_replicas"] = ["eu-central"]
    with pytest.raises(TopologyError, match="crosses zones"):
        parse_topology(raw)


def test_duplicate_region_is_refused():
    raw = copy.deepcopy(RAW)
    dup = copy.deepcopy(_region(raw, "us-west"))
    dup["storage_root"] = "regions/elsewhere"
    raw["regions"].append(dup)
    with pytest.raises(TopologyError, match="duplicate region 'us-west'"):
        parse_topology(raw)


def test_the_global_services_publish_to_a_bucket_of_their_own_outside_every_zone():
    raw = copy.deepcopy(RAW)
    raw["global_storage_root"] = "platform/global"
    with pytest.raises(
        TopologyError, match=r"global_storage_root: .*give an object-store URL, s3://bucket/prefix"
    ):
        parse_topology(raw)
    _region(raw, "eu-west")["storage_root"] = "s3://meridian-eu/eu-west"
    raw["global_storage_root"] = "s3://meridian-eu/platform"
    with pytest.raises(TopologyError, match=r"is in the bucket of region 'eu-west'"):
        parse_topology(raw)
    raw["global_storage_root"] = "s3://meridian-platform/published"
    assert parse_topology(raw).global_storage_root == "s3://meridian-platform/published"


def test_missing_field_is_refused_with_its_path():
    raw = copy.deepcopy(RAW)
    del _region(raw, "us-east")["cost"]["transfer_gb"]
    with pytest.raises(TopologyError, match=r"regions\.0\.cost\.transfer_gb: missing field"):
        parse_topology(raw)


def test_unknown_dr_target_and_missing_dr_region_are_refused():
    raw = copy.deepcopy(RAW)
    _region(raw, "us-east")["dr_region"] = "us-north"
    del _region(raw, "eu-west")["dr_region"]
    with pytest.raises(TopologyError) as err:
        parse_topology(raw)
    assert "replicates to unknown region 'us-north'" in str(err.value)
    assert "active region 'eu-west' has no dr_region" in str(err.value)


def test_unreadable_files_are_refused_with_the_path(tmp_path: Path):
    with pytest.raises(TopologyError, match="topology file not found"):
        load_topology(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [unclosed")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)


def test_adding_a_region_is_an_edit_to_the_file_only(tmp_path: Path):
    raw = copy.deepcopy(RAW)
    raw["regions"].append(
        {**copy.deepcopy(_region(raw, "eu-central")), "name": "eu-north", "storage_root": "regions/eu-north"}
    )
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert "eu-north" in [r.name for r in load_topology(path).regions]
