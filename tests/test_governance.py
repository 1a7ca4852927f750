"""Classification, sharing and the residency audit — including attempts to break residency."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from datetime import date

import dagster as dg
import polars as pl
import pytest

from assets.residency import residency_audit
from meridian import governance, residency
from meridian.generator import GeneratorConfig
from meridian.paths import region_paths
from meridian.sharing import aggregate_shared
from meridian.topology import load_topology
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource
from tests.helpers import day_range, write_lake

TOPOLOGY = load_topology()
POLICY = governance.default_policy()


def _problems_by_path(report) -> dict[str, str]:
    """Every finding of the audit, joined per file."""
    return {
        p: "; ".join(f.problem for f in report.findings if f.path == p)
        for p in {f.path for f in report.findings}
    }


@pytest.fixture
def home(tmp_path):
    """Two days of raw lake in three regions of three zones."""
    home = tmp_path / "home"
    cfg = GeneratorConfig(rows_per_day=600)
    for region in ("us-east", "eu-west", "ap-southeast"):
        r = TOPOLOGY.region(region)
        write_lake(region_paths(r, home), r, cfg, day_range(date(2026, 1, 1), 2))
    return home


def test_every_column_of_every_table_and_asset_is_classified():
    for name, table in POLICY.tables.items():
        for column in table.columns:
            assert POLICY.classify(column) in governance.CLASSES, (name, column)
        assert table.replication in (*TOPOLOGY.replication.classes, "none"), name
    assert POLICY.asset_classification("raw_transactions")[0] == "personal"
    assert POLICY.asset_classification("merchant_risk_view")[0] == "aggregate"
    with pytest.raises(governance.UnclassifiedColumn, match="'shoe_size' has no class"):
        POLICY.classify("shoe_size")


def test_classification_shows_as_tags_and_metadata_in_the_definitions():
    from assets.definitions_file import load_definitions_module

    graph = load_definitions_module().defs.resolve_asset_graph()
    spec = graph.get(dg.AssetKey("raw_transactions"))
    assert spec.tags["meridian/classification"] == "personal"
    assert spec.metadata["column_classification"].value["email"] == "personal"
    assert graph.get(dg.AssetKey("fraud_predictions")).tags["meridian/classification"] == "pseudonymous"


def test_the_audit_passes_on_clean_data_and_names_every_planted_leak(home):
    assert residency.residency_audit(TOPOLOGY, POLICY, home).passed
    eu = region_paths(TOPOLOGY.region("eu-west"), home)
    us = region_paths(TOPOLOGY.region("us-east"), home)
    source = next(eu.table("raw_transactions").glob("day=*/origin=source/*.parquet"))
    # 1. eu personal data copied into the us zone (same column names)
    planted_us = us.root / "lake" / "scratch" / "copy.parquet"
    planted_us.parent.mkdir(parents=True)
    shutil.copyfile(source, planted_us)
    # 2. eu e-mails outside every zone, in a column renamed to hide it
    renamed = home / "exports" / "contacts.jsonl"
    renamed.parent.mkdir()
    emails = pl.read_parquet(source, columns=["email"])["email"].head(20).to_list()
    renamed.write_text("\n".join(json.dumps({"contact": e}) for e in emails))
    # 3. a customer id in a global SQLite database (e.g. pasted into run metadata)
    db = home / "dagster" / "runs.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("create table notes (body text)")
        # a real eu customer's id, inside a sentence: found by value, whatever its shape
        customer = pl.read_parquet(source, columns=["customer_id"])["customer_id"][0]
        con.execute("insert into notes values (?)", [f"escalated by support for {customer}, see ticket"])
    con.close()
    # 4. an eu customer id in a Delta log entry outside every zone: JSON lines under `.json`,
    # the id inside the column statistics (a string of JSON within the JSON)
    log_entry = home / "exports" / "_delta_log" / "00000000000000000000.json"
    log_entry.parent.mkdir()
    stats = json.dumps({"numRecords": 1, "minValues": {"customer_id": customer}})
    log_entry.write_text(json.dumps({"commitInfo": {}}) + "\n" + json.dumps({"add": {"stats": stats}}) + "\n")
    report = residency.residency_audit(TOPOLOGY, POLICY, home)
    assert not report.passed
    problems = _problems_by_path(report)
    assert "of zone(s) ['eu']" in problems["exports/_delta_log/00000000000000000000.json"]
    assert (
        "personal or pseudonymous value(s) of zone(s) ['eu']"
        in problems["regions/us-east/lake/scratch/copy.parquet"]
    )
    # (the generator's e-mails repeat across regions: the finding names every zone holding them)
    assert re.search(
        r"column 'contact' holds \d+ personal or pseudonymous value\(s\) of zone\(s\) \[.*'eu'",
        problems["exports/contacts.jsonl"],
    )
    assert "of zone(s) ['eu']" in problems["dagster/runs.db"]
    # The same file inside its own zone is fine (a DR replica in eu-central, say).
    for path in (planted_us, renamed, db, log_entry):
        path.unlink()
    eu_central = (
        region_paths(TOPOLOGY.region("eu-central"), home).root / "replicas" / "eu-west" / "copy.parquet"
    )
    eu_central.parent.mkdir(parents=True)
    shutil.copyfile(source, eu_central)
    assert residency.residency_audit(TOPOLOGY, POLICY, home).passed


def test_the_audit_asset_fails_its_blocking_check_and_alerts_on_a_leak(home):
    eu = region_paths(TOPOLOGY.region("eu-west"), home)
    leak = home / "global" / "leak.parquet"
    leak.parent.mkdir(parents=True)
    shutil.copyfile(next(eu.table("raw_transactions").glob("day=*/origin=source/*.parquet")), leak)
    alerts = home / "alerts.jsonl"
    result = dg.materialize(
        [residency_audit],
        resources={
            "topology": RegionTopologyResource(),
            "lake": RegionalLakeResource(home=str(home)),
            "alerting": AlertingResource(path=str(alerts)),
        },
        selection=[residency_audit.key],
        raise_on_error=False,
    )
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    sent = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert sent[0]["severity"] == "ERROR" and "global/leak.parquet" in sent[0]["message"]
    report = json.loads((home / "platform" / "residency_audit.json").read_text())
    assert not report["passed"] and any("zone-bound columns" in f["problem"] for f in report["findings"])


def test_sharing_refuses_personal_columns_and_pseudonymises_per_zone(home):
    frame = pl.DataFrame(
        {"customer_id": ["euwest-c1", "euwest-c2"], "merchant_id": ["m1", "m1"], "amount": [1.0, 2.0]}
    )
    eu_key = governance.zone_key(TOPOLOGY, POLICY, "eu", home)
    us_key = governance.zone_key(TOPOLOGY, POLICY, "us", home)
    assert eu_key != us_key and eu_key == governance.zone_key(TOPOLOGY, POLICY, "eu", home)
    key_file = region_paths(TOPOLOGY.region("eu-west"), home).root / "secrets" / "pseudonym.key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600  # inside the zone, private
    shared = governance.share(frame, POLICY, eu_key)
    assert shared["merchant_id"].to_list() == ["m1", "m1"]
    assert not set(shared["customer_id"]) & set(frame["customer_id"])
    assert shared["customer_id"].to_list() == governance.share(frame, POLICY, eu_key)["customer_id"].to_list()
    assert shared["customer_id"].to_list() != governance.share(frame, POLICY, us_key)["customer_id"].to_list()
    with pytest.raises(governance.ResidencyViolation, match="email"):
        governance.share(frame.with_columns(email=pl.lit("a@b.example")), POLICY, eu_key)


def test_groups_below_the_minimum_size_are_suppressed():
    rows = []
    for merchant, customers in (("big", 30), ("small", 5)):
        for i in range(customers):
            rows.append(
                {
                    "customer_id": f"h{merchant}{i}",
                    "merchant_id": merchant,
                    "merchant_category": "grocery",
                    "amount": 10.0,
                    "currency": "USD",
                    "label": 0,
                }
            )
    extract = pl.DataFrame(rows).with_columns(
        region=pl.lit("us-east"),
        zone=pl.lit("us"),
        window_start=pl.lit("2026-01-01"),
        window_end=pl.lit("2026-01-30"),
    )
    table, suppressed = aggregate_shared([extract], {"USD": 1.0}, min_group=20)
    assert table["merchant_id"].to_list() == ["big"] and suppressed == 1
    assert table["distinct_customers"].to_list() == [30]
    assert POLICY.zone_bound(table.columns) == []


def test_the_audit_reads_every_row_and_finds_personal_values_of_any_shape_and_file_name(home):
    """Regression: the audit read the first 5,000 rows of a file and knew personal values only by
    the generator's id pattern; a leak past row 5,000, or of a card fingerprint or device id in
    a column with an innocent name, or in a content-addressed object without suffix, passed."""
    eu = region_paths(TOPOLOGY.region("eu-west"), home)
    source = pl.read_parquet(next(eu.table("raw_transactions").glob("day=*/origin=source/*.parquet")))
    card = source["card_fingerprint"][3]
    us = region_paths(TOPOLOGY.region("us-east"), home)
    notes = [f"note {i}" for i in range(12_000)]
    notes[11_500] = f"refund to {card}"
    deep = us.root / "lake" / "scratch" / "notes.parquet"
    deep.parent.mkdir(parents=True)
    # (named as the audit's own columns are: a file's names never collide with the implementation's)
    pl.DataFrame({"column": list(range(12_000)), "token": notes}).write_parquet(deep)
    # A content-addressed object (as replicas store them): no suffix, Parquet inside.
    blob = home / "regions" / "us-west" / "replicas" / "stray" / "objects" / "ab" / "ab12cd34"
    blob.parent.mkdir(parents=True)
    source.select("device_id").rename({"device_id": "payload_ref"}).write_parquet(blob)
    report = residency.residency_audit(TOPOLOGY, POLICY, home)
    problems = _problems_by_path(report)
    assert (
        "column 'token' holds 1 personal or pseudonymous value(s) of zone(s) ['eu']"
        in problems["regions/us-east/lake/scratch/notes.parquet"]
    )
    assert "column 'payload_ref'" in problems["regions/us-west/replicas/stray/objects/ab/ab12cd34"]
    assert report.personal_values_indexed["eu"] > source.height  # every id, e-mail, card, device


def test_the_audits_fast_path_finds_exactly_what_the_per_column_tokens_find():
    """`_any_token` (no unpivot, no de-duplication) answers as `_tokens` + membership would,
    and the hash index's bitmap never hides a member: every value of a large set is found,
    values outside it are not (beyond 64-bit collisions), across free text and ids."""
    rng = __import__("numpy").random.default_rng(7)
    members = [f"cust-{i:07d}" for i in range(200_000)]
    index = residency.HashIndex(__import__("numpy").unique(residency._hashes(pl.Series(members))))
    assert index.contains(residency._hashes(pl.Series(members))).all()
    outsiders = pl.Series([f"other-{i:07d}" for i in range(200_000)])
    assert not index.contains(residency._hashes(outsiders)).any()

    def frame(hidden: str | None, where: str) -> pl.DataFrame:
        ids = [f"txn-{i}" for i in range(500)]
        notes = [f"refund for order {i}: ok" for i in range(500)]
        tags = [["a", "bb"]] * 500
        if hidden is not None:
            at = int(rng.integers(500))
            if where == "id":
                ids[at] = hidden
            elif where == "note":
                notes[at] = f'{{"msg": "customer {hidden} disputed"}}'
            else:  # inside a nested column (a cast to text failed on these: the file went unread)
                tags = [*tags[:at], ["a", hidden], *tags[at + 1 :]]
        return pl.DataFrame({"id": ids, "note": notes, "amount": rng.random(500), "tags": tags})

    for hidden in (None, members[12_345], members[-1]):
        for where in ("id", "note", "tags"):
            table = frame(hidden, where)
            columns = residency._text_columns(table)
            detailed = residency._member_mask(residency._tokens(table, columns)["token"], index).any()
            assert residency._any_token(table, columns, index) == detailed == (hidden is not None)
            problems = residency._content_problems(
                residency._Table("", table, True), "eu", {"us": index}, index
            )
            assert bool(problems) == (hidden is not None)
            if hidden is not None:
                assert f"column '{where}'" in problems[0] and "['us']" in problems[0]
