"""Residency proven on the wire: every region and the global services on object storage, one
S3 endpoint each, every object written to each endpoint logged and kept (tests.wire_log).

The README's main command runs the whole graph for the three active regions (landing zone,
lake, dbt, features, training, scoring, monitoring, replication to each DR region) and the
global services (shared aggregates, residency audit, catalog, cost, health). Then every object
any endpoint received is scanned, every row: no personal or pseudonymous value of a zone is in
an object written to another zone's endpoint, and the platform's own endpoint (outside every
zone) received no zone-bound column and no personal value at all. A planted cross-zone write
must be found, or the check proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.residency import residency_audit
from meridian import governance, residency
from meridian.paths import REPO_ROOT
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource
from tests.helpers import trainable_days
from tests.object_stores import start_region_store

pytestmark = pytest.mark.e2e
ACTIVE = ("us-east", "eu-west", "ap-southeast")
GLOBAL = "global"  # the platform's endpoint (meridian.global_store.GLOBAL_SITE)


@pytest.fixture(scope="module")
def platform_on_the_wire(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wire")
    raw = yaml.safe_load((REPO_ROOT / "platform" / "regions.yaml").read_text())
    sites = [r["name"] for r in raw["regions"]] + [GLOBAL]
    with ThreadPoolExecutor(len(sites)) as pool:
        stores = dict(
            zip(
                sites,
                pool.map(lambda s: start_region_store(s, workdir, wire_log=workdir / "wire" / s), sites),
                strict=True,
            )
        )
    try:
        for region in raw["regions"]:
            region["storage_root"] = f"s3://{stores[region['name']].bucket}/{region['name']}"
        raw["global_storage_root"] = f"s3://{stores[GLOBAL].bucket}/platform"
        topology_file = workdir / "regions.yaml"
        topology_file.write_text(yaml.safe_dump(raw))
        env = {**os.environ, "MERIDIAN_HOME": str(workdir / "home"), "MERIDIAN_TOPOLOGY": str(topology_file)}
        for site, store in stores.items():
            env.update(store.env() if site in ACTIVE else _without_landing(store.env()))
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "run",
                "--days",
                str(len(trainable_days(3))),
                "--regions",
                ",".join(ACTIVE),
                "--rows-per-day",
                "600",
                "--parallel",
                "2",
                "--trials",
                "2",
                "--score-days",
                "2",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        (workdir / "run.out").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        yield {"stores": stores, "wire": workdir / "wire", "topology": topology_file, "env": env}
    finally:
        for store in stores.values():
            store.close()


def _without_landing(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("MERIDIAN_LANDING_URL_")}


def _writes(wire: Path, site: str) -> list[dict]:
    log = wire / site / "writes.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def audit_the_wire(wire: Path, zones: dict[str, str | None]) -> residency.AuditReport:
    """Every object each endpoint received, scanned as the residency audit scans files: stored in
    its endpoint's zone (`zones[site]`, None for the platform's endpoint outside every zone).
    Each zone's personal values are those of its regions' lake tables of record as written to
    the region's own endpoint, under its own lake prefix: where personal data enters a region."""
    policy = governance.default_policy()
    record = {
        name: bound
        for name, table in policy.tables.items()
        if table.store == "lake" and (bound := policy.zone_bound(table.columns, strict=False))
    }
    files, sources = [], []
    for site, zone in zones.items():
        for write in _writes(wire, site):
            copy = wire / site / "objects" / write["copy"]
            kind = residency.file_kind(copy) or "unknown"
            files.append((f"{site}: s3://{write['bucket']}/{write['key']}", copy, kind, zone))
            for table, bound in record.items():
                if kind == "parquet" and write["key"].startswith(f"{site}/lake/{table}/"):
                    sources.append((zone, lambda c=copy, b=bound: residency.parquet_columns(c, b)))
    return residency.audit_files(policy, files, residency.personal_values(sources))


def _zones(topology_file: Path) -> dict[str, str | None]:
    raw = yaml.safe_load(topology_file.read_text())
    return {**{r["name"]: r["zone"] for r in raw["regions"]}, GLOBAL: None}


def test_no_personal_value_crosses_a_zone_on_the_wire(platform_on_the_wire):
    wire, zones = platform_on_the_wire["wire"], _zones(platform_on_the_wire["topology"])
    report = audit_the_wire(wire, zones)
    assert report.passed, "\n".join(f"{f.path}: {f.problem}" for f in report.findings[:20])
    # Not a vacuous pass: every zone's personal values were indexed, every endpoint wrote.
    assert set(report.personal_values_indexed) == {"us", "eu", "apac"}
    assert all(n > 1000 for n in report.personal_values_indexed.values()), report.personal_values_indexed
    assert report.files_with_zone_bound_columns > 50
    keys = {site: {w["key"] for w in _writes(wire, site)} for site in zones}
    regions = yaml.safe_load(platform_on_the_wire["topology"].read_text())["regions"]
    for region in ACTIVE:
        dr_region = next(r["dr_region"] for r in regions if r["name"] == region)
        assert any(k.startswith("incoming/") for k in keys[region])  # the generator's deliveries
        assert any(k.startswith(f"{region}/lake/raw_transactions/_delta_log/") for k in keys[region])
        # replication wrote the region's lake to its DR region's endpoint, and nowhere else
        replica = f"{dr_region}/replicas/{region}/lake/raw_transactions/"
        assert any(k.startswith(replica) for k in keys[dr_region]), dr_region
        others = [s for s in zones if s not in (region, dr_region)]
        assert not any(f"/{region}/" in k or k.startswith(f"{region}/") for s in others for k in keys[s])
    # The global services published to the platform's endpoint only, and what they published
    # was scanned whole above (outside every zone: any personal value or zone-bound column fails).
    published = keys[GLOBAL]
    for name in (
        "global/merchant_risk/data.parquet",
        "platform/residency_audit.json",
        "platform/governance_catalog.json",
        "platform/cost_report.json",
        "platform/health.json",
    ):
        assert f"platform/{name}" in published, (name, sorted(published))
    assert report.by_zone.get("global", 0) >= 5
    audit = json.loads(_published(wire, "platform/platform/residency_audit.json"))
    assert audit["passed"] is True, audit["findings"][:5]
    # The catalog read each lake table's columns from the regions' buckets: as the policy declares.
    catalog = json.loads(_published(wire, "platform/platform/governance_catalog.json"))
    assert catalog["problems"] == [], catalog["problems"]


def _published(wire: Path, key: str) -> bytes:
    """The last version of `key` the platform's endpoint received."""
    copy = [w["copy"] for w in _writes(wire, GLOBAL) if w["key"] == key][-1]
    return (wire / GLOBAL / "objects" / copy).read_bytes()


def test_a_planted_cross_zone_write_fails_the_check(platform_on_the_wire, monkeypatch):
    """The check can fail: one eu-west lake file written to us-east's endpoint (with us-east's
    own credentials: the store cannot tell), and one of ap-southeast's label files to the
    platform's endpoint, are both found, by the zone they were stored in."""
    stores, wire = platform_on_the_wire["stores"], platform_on_the_wire["wire"]
    zones = _zones(platform_on_the_wire["topology"])

    def a_lake_file(site: str, table: str) -> bytes:
        write = next(
            w
            for w in _writes(wire, site)
            if w["key"].startswith(f"{site}/lake/{table}/day=") and w["key"].endswith(".parquet")
        )
        return (wire / site / "objects" / write["copy"]).read_bytes()

    us, platform = stores["us-east"], stores[GLOBAL]
    us.client().put_object(
        Bucket=us.bucket, Key="us-east/exports/eu.parquet", Body=a_lake_file("eu-west", "raw_transactions")
    )
    platform.client().put_object(
        Bucket=platform.bucket,
        Key="platform/global/labels.parquet",
        Body=a_lake_file("ap-southeast", "raw_labels"),
    )
    report = audit_the_wire(wire, zones)
    found = {f.path: f for f in report.findings}
    planted_us = f"us-east: s3://{us.bucket}/us-east/exports/eu.parquet"
    planted_global = f"global: s3://{platform.bucket}/platform/global/labels.parquet"
    assert set(found) == {planted_us, planted_global}, sorted(found)
    # (a value may belong to several zones: the generator's e-mail names repeat across regions)
    assert found[planted_us].location_zone == "us" and "'eu'" in found[planted_us].problem
    assert found[planted_global].location_zone == "global"
    problems = " ".join(f.problem for f in report.findings if f.path == planted_global)
    assert "outside every zone" in problems and "'apac'" in problems
    # The residency audit asset reads the platform's bucket too: the planted labels fail it.
    for name, value in platform_on_the_wire["env"].items():
        if name.startswith("MERIDIAN_"):
            monkeypatch.setenv(name, value)
    home = Path(platform_on_the_wire["env"]["MERIDIAN_HOME"])
    result = dg.materialize(
        [residency_audit],
        resources={
            "topology": RegionTopologyResource(path=str(platform_on_the_wire["topology"])),
            "lake": RegionalLakeResource(home=str(home)),
            "alerting": AlertingResource(path=str(home / "planted-alerts.jsonl")),
        },
        raise_on_error=False,
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    findings = result.asset_materializations_for_node("residency_audit")[0].metadata["findings"].value
    assert f"s3://{platform.bucket}/platform/global/labels.parquet" in findings, findings
