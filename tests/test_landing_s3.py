"""A region's landing zone on its own object store: one S3-compatible server per region on
loopback (tests/object_stores.py), each with its own bucket and credentials. Files users put
there are ingested once; a changed object is quarantined; a region's credentials open no
other region's store; a killed endpoint is an outage the sensor reports, not a crash."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from assets.definitions_file import load_definitions_module
from assets.ingestion import RECONCILIATION_CHECK, labels_ingestion, transactions_ingestion
from assets.landing_sensor import landing_sensor
from meridian import landing
from meridian.generator import GeneratorConfig, generate_transactions
from meridian.landing_stores import S3Landing, landing_for
from meridian.object_store import ObjectStoreConfigError, landing_location
from meridian.paths import region_paths
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource
from tests.helpers import lake_day
from tests.object_stores import start_region_store

DAY = "2026-01-12"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("object-stores")
    started = {region: start_region_store(region, workdir) for region in ("eu-west", "us-east")}
    yield started
    for store in started.values():
        store.process.terminate()
        store.process.wait(timeout=10)


def _partner_csv(topology, tag: str, n: int = 12, amount_factor: float = 1.0) -> bytes:
    region = topology.region("eu-west")
    rows = generate_transactions(
        GeneratorConfig(rows_per_day=n, seed=5), region, date.fromisoformat(DAY)
    ).rows
    rows = rows.with_columns(pl.col("transaction_id") + f"-{tag}", pl.col("amount") * amount_factor)
    return rows.write_csv().encode()


def test_a_regions_credentials_open_its_own_store_and_no_other(stores, tmp_path):
    eu, us = stores["eu-west"], stores["us-east"]
    assert eu.client().list_objects_v2(Bucket=eu.bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as refused:
        us.client(eu.access_key_id, eu.secret_access_key).list_objects_v2(Bucket=us.bucket)
    assert refused.value.response["Error"]["Code"] in (
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "AccessDenied",
    )
    # What eu-west's processes are configured with: its endpoint and its keys, nothing of us-east's.
    env = {**eu.env(), **us.env()}
    location = landing_location("eu-west", env)
    assert (location.endpoint_url, location.bucket, location.prefix) == (eu.endpoint, eu.bucket, "incoming")
    assert us.access_key_id not in repr(location) and eu.secret_access_key not in repr(location)
    assert {location.access_key_id, location.secret_access_key} == {eu.access_key_id, eu.secret_access_key}
    # Configured incompletely: the message names what to set.
    with pytest.raises(
        ObjectStoreConfigError, match="MERIDIAN_S3_ACCESS_KEY_ID_EU_WEST and MERIDIAN_S3_SECRET"
    ):
        landing_location("eu-west", {"MERIDIAN_LANDING_URL_EU_WEST": "s3://b/p"})
    with pytest.raises(ObjectStoreConfigError, match="not an object-store URL"):
        landing_location("eu-west", {**eu.env(), "MERIDIAN_LANDING_URL_EU_WEST": "/mnt/landing"})
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(json.dumps({"eu-west": {"access_key_id": "k", "secret_access_key": "s"}}))
    from_file = landing_location(
        "eu-west", {"MERIDIAN_LANDING_URL_EU_WEST": "s3://b/p", "MERIDIAN_S3_SECRETS_FILE": str(secrets)}
    )
    assert (from_file.access_key_id, from_file.secret_access_key) == ("k", "s")


def test_files_put_in_a_regions_bucket_are_ingested_once_and_a_changed_object_is_quarantined(
    stores, tmp_path, topology, monkeypatch
):
    eu, us = stores["eu-west"], stores["us-east"]
    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    for name, value in {**eu.env(), **us.env()}.items():
        monkeypatch.setenv(name, value)
    root = region_paths(topology.region("eu-west"), home).root
    store = landing_for("eu-west", root)
    assert isinstance(store, S3Landing)
    client = eu.client()
    client.put_object(
        Bucket=eu.bucket, Key=f"incoming/transactions/{DAY}/partner.csv", Body=_partner_csv(topology, "p")
    )
    client.put_object(Bucket=eu.bucket, Key="incoming/transactions/latest.csv", Body=b"x")
    alerts = home / "alerts" / "alerts.jsonl"
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=150),
        "alerting": AlertingResource(path=str(alerts)),
    }
    defs = load_definitions_module().defs
    with dg.instance_for_test() as instance:

        def tick():
            context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
            return landing_sensor.evaluate_tick(context).run_requests

        def ingest(partition_key):
            result = dg.materialize(
                [transactions_ingestion, labels_ingestion],
                resources=resources,
                instance=instance,
                partition_key=partition_key,
            )
            assert result.success
            checks = [e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILIATION_CHECK]
            assert checks and all(c.passed for c in checks)

        (request,) = tick()
        assert request.partition_key.keys_by_dimension == {"region": "eu-west", "day": DAY}
        assert "transactions/latest.csv" in alerts.read_text()  # misplaced: alerted, not ignored
        ingest(request.partition_key)
        lake = lake_day(root / "lake", "raw_transactions", DAY)
        assert lake.filter(pl.col("transaction_id").str.ends_with("-p")).height == 12
        assert lake.height > 150  # the generator's delivery, into the same bucket
        keys = {o["Key"] for o in client.list_objects_v2(Bucket=eu.bucket)["Contents"]}
        assert f"incoming/transactions/{DAY}/{landing.GENERATOR_FILE}" in keys
        assert f"incoming/chargebacks/{DAY}/{landing.GENERATOR_FILE}" in keys
        assert tick() == []  # everything put there is ingested
        # The same key with other content: the first version stays, the new one is quarantined.
        changed = _partner_csv(topology, "p", amount_factor=3.0)
        client.put_object(Bucket=eu.bucket, Key=f"incoming/transactions/{DAY}/partner.csv", Body=changed)
        (request,) = tick()
        ingest(request.partition_key)
        assert lake_day(root / "lake", "raw_transactions", DAY).equals(lake)
        quarantined = lake_day(root / "lake", "quarantined_transactions", DAY)
        assert quarantined.filter(pl.col("reason").str.contains(landing.CHANGED_REASON)).height == 12
        assert tick() == []
    # Nothing of eu-west's reached us-east's store.
    assert us.client().list_objects_v2(Bucket=us.bucket)["KeyCount"] == 0


def test_a_killed_endpoint_is_an_outage_a_scan_names_and_the_sensor_reports(tmp_path, topology, monkeypatch):
    eu = start_region_store("eu-west", tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    for name, value in eu.env().items():
        monkeypatch.setenv(name, value)
    eu.kill()  # SIGKILL: the region's object store is gone
    root = region_paths(topology.region("eu-west"), home).root
    with pytest.raises(EndpointConnectionError, match=eu.endpoint.split("//")[1]):
        landing.pending(root, store=landing_for("eu-west", root))
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "alerting": AlertingResource(path=str(home / "alerts.jsonl")),
    }
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources=resources, definitions=load_definitions_module().defs
        )
        result = landing_sensor.evaluate_tick(context)
    assert result.run_requests == []  # the other regions were scanned; eu-west reported
    assert "eu-west" in Path(home / "alerts.jsonl").read_text()


def test_the_definitions_refuse_to_load_with_a_regions_object_store_half_configured(monkeypatch):
    monkeypatch.setenv("MERIDIAN_LANDING_URL_US_EAST", "s3://meridian-us-east-landing/incoming")
    monkeypatch.setenv("MERIDIAN_S3_ACCESS_KEY_ID_US_EAST", "AKIA-us-east")
    with pytest.raises(ObjectStoreConfigError, match=r"us-east.*MERIDIAN_S3_SECRET_ACCESS_KEY_US_EAST"):
        load_definitions_module().build_resources("local")


def test_a_frozen_endpoint_costs_only_its_region_and_the_region_recovers_when_resumed(
    tmp_path, topology, monkeypatch
):
    """SIGSTOP on eu-west's object store: the sensor's tick still requests us-east's new file
    (zones are listed at once; eu-west's costs only its own bounded timeout) and reports
    eu-west; after SIGCONT eu-west's file is requested."""
    import signal

    eu = start_region_store("eu-west", tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    for name, value in eu.env().items():
        monkeypatch.setenv(name, value)
    eu.client().put_object(
        Bucket=eu.bucket, Key=f"incoming/transactions/{DAY}/partner.csv", Body=_partner_csv(topology, "f")
    )
    us_landing = landing.landing_root(region_paths(topology.region("us-east"), home).root)
    (us_landing / "transactions" / DAY).mkdir(parents=True)
    (us_landing / "transactions" / DAY / "partner.csv").write_text("transaction_id\n")
    alerts = home / "alerts.jsonl"
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "alerting": AlertingResource(path=str(alerts)),
    }

    def requested() -> set[tuple[str, str]]:
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, resources=resources, definitions=load_definitions_module().defs
            )
            result = landing_sensor.evaluate_tick(context)
        return {
            tuple(r.partition_key.keys_by_dimension[d] for d in ("region", "day"))
            for r in result.run_requests
        }

    eu.process.send_signal(signal.SIGSTOP)
    try:
        assert requested() == {("us-east", DAY)}
        assert "eu-west's landing zone s3://meridian-eu-west-landing/incoming" in alerts.read_text()
        assert "unreachable" in alerts.read_text()
    finally:
        eu.process.send_signal(signal.SIGCONT)
    assert requested() == {("us-east", DAY), ("eu-west", DAY)}
    eu.process.terminate()
    eu.process.wait(timeout=10)
