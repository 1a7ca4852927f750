"""A region whose storage root is on object storage: its lake's Delta tables live in its own
bucket on its own S3-compatible endpoint (a moto server on loopback), written by the ingestion
assets and read by dbt through the plugin; nothing of them is written to the local folder,
and no other region's endpoint sees a byte. A killed endpoint is an outage the probe names."""

from __future__ import annotations

import signal
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.definitions_file import load_definitions_module
from assets.ingestion import labels_ingestion, transactions_ingestion
from assets.replication import build_replica_asset
from assets.transforms import regional_dbt_models
from meridian import dr
from meridian.lake_tables import LakeLocation
from meridian.object_store import S3Location, list_objects
from meridian.paths import REPO_ROOT, region_paths
from meridian.topology import load_topology
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource
from resources.topology import RegionTopologyResource
from tests.object_stores import start_region_store

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
raw_lake_replica = build_replica_asset("raw_lake")


@pytest.fixture(scope="module")
def region_on_s3(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lake-s3")
    stores = {r: start_region_store(r, workdir) for r in ("eu-west", "eu-central", "us-east", "ap-southeast")}
    raw = yaml.safe_load((REPO_ROOT / "platform" / "regions.yaml").read_text())
    for region in raw["regions"]:
        # A region and its DR region; and ap-southeast, whose endpoint the freeze drill stops.
        if region["name"] in ("eu-west", "eu-central", "ap-southeast"):
            region["storage_root"] = f"s3://{stores[region['name']].bucket}/{region['name']}"
    topology_file = workdir / "regions.yaml"
    topology_file.write_text(yaml.safe_dump(raw))
    yield stores, topology_file, workdir
    for store in stores.values():
        store.close()


def _env(store) -> dict[str, str]:
    suffix = store.region.upper().replace("-", "_")
    return {
        f"MERIDIAN_S3_ENDPOINT_{suffix}": store.endpoint,
        f"MERIDIAN_S3_ACCESS_KEY_ID_{suffix}": store.access_key_id,
        f"MERIDIAN_S3_SECRET_ACCESS_KEY_{suffix}": store.secret_access_key,
    }


def test_the_pipeline_writes_and_reads_the_regions_lake_on_its_own_object_store(region_on_s3, monkeypatch):
    stores, topology_file, workdir = region_on_s3
    eu, dr_site, us = stores["eu-west"], stores["eu-central"], stores["us-east"]
    for name, value in {**_env(eu), **_env(dr_site)}.items():
        monkeypatch.setenv(name, value)
    home = workdir / "home"
    resources = {
        **load_definitions_module().build_resources("local"),
        "topology": RegionTopologyResource(path=str(topology_file)),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=150, malformed_rate=0.05),
        "alerting": AlertingResource(path=str(workdir / "alerts.jsonl")),
    }
    key = lambda day: str(dg.MultiPartitionKey({"region": "eu-west", "day": day}))  # noqa: E731
    tags = {ASSET_PARTITION_RANGE_START_TAG: key(DAYS[0]), ASSET_PARTITION_RANGE_END_TAG: key(DAYS[-1])}
    assert dg.materialize([transactions_ingestion, labels_ingestion], resources=resources, tags=tags).success
    assert dg.materialize([regional_dbt_models], resources=resources, tags=tags).success

    topology = load_topology(topology_file)
    paths = region_paths(topology.region("eu-west"), home)
    assert paths.lake_url == f"s3://{eu.bucket}/eu-west/lake"
    location = S3Location(
        "eu-west", eu.bucket, "eu-west/lake", eu.endpoint, eu.access_key_id, eu.secret_access_key
    )
    keys = [o.key for o in list_objects(location, location.client(), "")]
    for table in ("raw_transactions", "quarantined_transactions", "raw_labels", "quarantined_labels"):
        assert any(k.startswith(f"{table}/_delta_log/") for k in keys), table
        if table != "quarantined_labels":  # (a day may well have no malformed chargeback)
            assert any(k.startswith(f"{table}/day=") and k.endswith(".parquet") for k in keys), table
    assert not (paths.lake / "raw_transactions").exists()  # nothing of the tables on the local disk
    lake_rows = paths.lake_table("raw_transactions").read().height
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        assert con.execute("select count(*) from lake.raw_transactions").fetchall()[0][0] == lake_rows > 300
        assert con.execute("select count(*) from stg_transactions").fetchall()[0][0] > 300
    # The DR copy: bucket to bucket, the Delta log after the files it names.
    replicated = dg.materialize([raw_lake_replica], resources=resources, partition_key="eu-west")
    assert replicated.success
    metadata = replicated.asset_materializations_for_node("raw_lake_replica")[0].metadata
    assert metadata["object_store_bytes_copied"].value > 0
    dr_paths = region_paths(topology.region("eu-central"), home)
    replica = LakeLocation.on_object_store(
        S3Location(
            "eu-central",
            dr_site.bucket,
            "eu-central/replicas/eu-west/lake",  # beside eu-central's own lake, never in it
            dr_site.endpoint,
            dr_site.access_key_id,
            dr_site.secret_access_key,
        )
    ).table("raw_transactions")
    assert dr_paths.lake_url == f"s3://{dr_site.bucket}/eu-central/lake"
    assert replica.version() == paths.lake_table("raw_transactions").version()
    assert replica.read().height == lake_rows
    dr_own = LakeLocation.on_object_store(dr_paths.lake_location.s3).table("raw_transactions")
    assert dr_own.version() is None  # the DR region's own lake is untouched
    # us-east's endpoint never saw eu-west's data (its bucket holds nothing).
    assert us.client().list_objects_v2(Bucket=us.bucket)["KeyCount"] == 0
    assert dr.probe(topology, home, "eu-west").problems == []

    eu.kill()  # the region's object store is gone: the probe says so, naming the lake
    problems = dr.probe(topology, home, "eu-west").problems
    assert any("lake table" in p and "unreachable" in p for p in problems), problems
    failed = dg.materialize(
        [transactions_ingestion], resources=resources, partition_key=key("2026-01-04"), raise_on_error=False
    )
    assert not failed.success  # a write to a dead endpoint fails the run; nothing is half-written


def test_a_frozen_endpoint_is_an_outage_within_the_probe_budget_and_stalls_no_other_region(
    region_on_s3, monkeypatch
):
    """ap-southeast's store is SIGSTOPped (it accepts connections and never answers, as a hung
    server or a black-holed network): its probe reports the outage within its deadline; the
    health tick probes the regions at once, so the others' verdicts do not wait behind it;
    another region's run goes on at its own pace; on SIGCONT the region is healthy again."""
    import time

    from assets.failover import region_health_sensor
    from meridian.dr.probes import LAKE_PROBE_DEADLINE_S

    stores, topology_file, workdir = region_on_s3
    frozen = stores["ap-southeast"]
    for name, value in _env(frozen).items():
        monkeypatch.setenv(name, value)
    home = workdir / "frozen-home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    monkeypatch.setenv("MERIDIAN_TOPOLOGY", str(topology_file))
    resources = {
        **load_definitions_module().build_resources("local"),
        "topology": RegionTopologyResource(path=str(topology_file)),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=100),
        "alerting": AlertingResource(path=str(workdir / "frozen-alerts.jsonl")),
    }

    def ingest(region: str, day: str):
        key = str(dg.MultiPartitionKey({"region": region, "day": day}))
        started = time.monotonic()
        result = dg.materialize([transactions_ingestion], resources=resources, partition_key=key)
        return result.success, time.monotonic() - started

    assert ingest("ap-southeast", DAYS[0])[0]  # the region holds a lake on its bucket
    ok, unfrozen_s = ingest("us-east", DAYS[0])
    assert ok
    topology = load_topology(topology_file)
    assert dr.probe(topology, home, "ap-southeast").problems == []

    frozen.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        problems = dr.probe(topology, home, "ap-southeast").problems
        frozen_probe_s = time.monotonic() - started
        assert any("lake table" in p and "unreachable" in p for p in problems), problems
        assert frozen_probe_s < LAKE_PROBE_DEADLINE_S + 2, frozen_probe_s
        # One health tick probes every region at once: the frozen one bounds it, nobody queues behind it.
        with dg.instance_for_test() as instance:
            started = time.monotonic()
            context = dg.build_sensor_context(instance=instance, resources=resources)
            list(region_health_sensor(context) or [])
            tick_s = time.monotonic() - started
        assert tick_s < LAKE_PROBE_DEADLINE_S + 4, tick_s
        # Another region's run is not held by the frozen endpoint.
        ok, frozen_s = ingest("us-east", DAYS[1])
        assert ok and frozen_s < max(3 * unfrozen_s, unfrozen_s + 5), (frozen_s, unfrozen_s)
        print(
            f"frozen endpoint: probe {frozen_probe_s:.2f} s (deadline {LAKE_PROBE_DEADLINE_S} s), "
            f"health tick {tick_s:.2f} s, us-east run {frozen_s:.2f} s (unfrozen {unfrozen_s:.2f} s)"
        )
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    assert dr.probe(topology, home, "ap-southeast").problems == []  # resumed: healthy, nothing lost
    assert ingest("ap-southeast", DAYS[1])[0]


def test_a_storage_root_of_another_scheme_is_refused_with_the_reason(tmp_path: Path):
    topology = load_topology()
    region = topology.region("eu-west").model_copy(update={"storage_root": "gs://bucket/eu"})
    with pytest.raises(ValueError, match="only s3://"):
        region_paths(region, tmp_path)
