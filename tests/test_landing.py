"""The landing zone (meridian.landing): files users deliver, every kind of malformed content,
duplicate and changed deliveries, out-of-order days, a file arriving mid-ingestion, and the
sensor that starts ingestion. Accepted + quarantined = delivered, per file and per day."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import dagster as dg
import orjson
import polars as pl
import pytest

from assets.definitions_file import load_definitions_module
from assets.ingestion import RECONCILIATION_CHECK, labels_ingestion, transactions_ingestion
from assets.landing_sensor import landing_sensor
from meridian import landing
from meridian.generator import GeneratorConfig, generate_transactions
from meridian.paths import region_paths
from meridian.validation import PROVENANCE, validate_transactions
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource
from tests.helpers import lake_day

DAY = "2026-01-12"


@pytest.fixture
def eu_west(topology):
    return topology.region("eu-west")


def _deliver(root: Path, key: str, content: bytes | pl.DataFrame) -> Path:
    """As a producer does: a hidden name first, then a rename into place."""
    path = landing.landing_root(root) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.part")
    if isinstance(content, pl.DataFrame):
        content.write_parquet(hidden)
    else:
        hidden.write_bytes(content)
    os.replace(hidden, path)
    return path


def _rows(region, n: int = 40, day: str = DAY) -> pl.DataFrame:
    return generate_transactions(GeneratorConfig(rows_per_day=n), region, date.fromisoformat(day)).rows


def _csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv().encode()


def _ingest(root: Path, region, day: str = DAY) -> landing.DayResult:
    delivery = landing.collect_day(root, "transactions", day)
    result = landing.validate_day(
        delivery, lambda rows: validate_transactions(rows, date.fromisoformat(day), region), "transactions"
    )
    landing.commit_day(root, "transactions", day, delivery)
    return result


def _reconciles(result: landing.DayResult) -> None:
    files = result.files
    assert (files["accepted"] + files["quarantined"] == files["delivered"]).all(), files
    assert result.accepted.height + result.quarantined.height == result.delivered
    assert PROVENANCE not in result.accepted.columns  # the lake table keeps its schema


def test_every_kind_of_malformed_file_is_quarantined_with_its_reason_and_nothing_is_lost(tmp_path, eu_west):
    root = tmp_path / "eu-west"
    good = _rows(eu_west)
    # Typed differently: times as a zoned timestamp (Paris), amounts as text, ids as integers-like.
    typed = (
        _rows(eu_west, day=DAY)
        .head(10)
        .with_columns(
            pl.col("event_time")
            .str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC")
            .dt.convert_time_zone("Europe/Paris"),
            pl.col("amount").cast(pl.String),
            pl.col("transaction_id") + "-typed",
        )
    )
    csv = good.head(7).with_columns(pl.col("transaction_id") + "-csv")
    csv = csv.with_columns(
        amount=pl.Series(["abc", "NaN", "inf", "1e400", "-5", "12.50", "7"]),
        currency=pl.Series(["EUR", "EUR", "EUR", "EUR", "EUR", "EUR", "XXX"]),
    )
    _deliver(root, f"transactions/{DAY}/good.parquet", good)
    _deliver(root, f"transactions/{DAY}/typed.parquet", typed)
    _deliver(root, f"transactions/{DAY}/mixed.csv", _csv(csv))
    lines = [
        json.dumps({**good.row(0, named=True), "transaction_id": "json-1", "amount": 17.25}),
        "{not json",
        "[1, 2, 3]",
        json.dumps({**good.row(1, named=True), "transaction_id": "json-2", "amount": {"value": 3}}),
        "",
    ]
    _deliver(root, f"transactions/{DAY}/lines.jsonl", "\n".join(lines).encode())
    _deliver(root, f"transactions/{DAY}/no-amount.csv", _csv(good.head(3).drop("amount")))
    _deliver(
        root,
        f"transactions/{DAY}/extra.csv",
        _csv(good.head(2).with_columns(pl.col("transaction_id") + "-x", note=pl.lit("x")).drop("email")),
    )
    spaced = good.slice(10, 3).with_columns(pl.col("transaction_id") + "-spaced")
    _deliver(
        root,
        f"transactions/{DAY}/spaced.csv",
        _csv(spaced.rename({"amount": " amount ", "channel": "channel "})),
    )
    _deliver(root, f"transactions/{DAY}/corrupt.parquet", b"PAR1 this is not parquet")
    _deliver(root, f"transactions/{DAY}/latin1.csv", "transaction_id,amount\ncafé,1\n".encode("latin-1"))
    _deliver(root, f"transactions/{DAY}/empty.csv", b"")
    # A UTF-8 byte order mark (Windows tools write one) is not a bad first line.
    bom = good.slice(20, 2).with_columns(pl.col("transaction_id") + "-bom")
    _deliver(
        root,
        f"transactions/{DAY}/bom.jsonl",
        b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in bom.iter_rows(named=True)).encode(),
    )
    _deliver(root, f"transactions/{DAY}/semicolons.csv", b"transaction_id;amount\nt-semi;12,50\n")
    # A spreadsheet's separator hint line before the header.
    hinted = good.slice(30, 2).with_columns(pl.col("transaction_id") + "-hint")
    _deliver(root, f"transactions/{DAY}/excel.csv", b"sep=,\r\n" + _csv(hinted))
    # Outside the naming contract: never read, and never dropped unseen either.
    _deliver(root, f"transactions/{DAY}/my file.csv", _csv(good.head(2)))
    _deliver(root, f"transactions/{DAY}/-export.csv", _csv(good.head(2)))
    _deliver(root, f"transactions/{DAY}/export.tsv", b"transaction_id\tamount\n")
    _deliver(root, f"transactions/{DAY}/header-only.csv", _csv(good.head(0)))
    (landing.landing_root(root) / f"transactions/{DAY}/.in-flight.csv").write_bytes(b"half a fi")

    result = _ingest(root, eu_west)
    _reconciles(result)
    by_key = {r["key"].rsplit("/", 1)[1]: r for r in result.files.iter_rows(named=True)}
    assert ".in-flight.csv" not in by_key  # in flight: not delivered yet
    assert by_key["good.parquet"]["accepted"] == good.height
    assert by_key["typed.parquet"]["accepted"] == 10  # Paris times and text amounts parse
    assert by_key["mixed.csv"] == {**by_key["mixed.csv"], "accepted": 1, "quarantined": 6, "delivered": 7}
    assert by_key["lines.jsonl"]["delivered"] == 4 and by_key["lines.jsonl"]["accepted"] == 1
    assert by_key["no-amount.csv"]["quarantined"] == 3
    assert by_key["no-amount.csv"]["problem"] == "missing required column(s) ['amount']"
    assert by_key["spaced.csv"]["accepted"] == 3  # a spreadsheet's padded header names its column
    assert by_key["extra.csv"]["accepted"] == 2 and by_key["extra.csv"]["ignored_columns"] == "note"
    assert by_key["bom.jsonl"]["accepted"] == 2 and by_key["bom.jsonl"]["quarantined"] == 0
    assert by_key["excel.csv"]["accepted"] == 2 and by_key["excel.csv"]["quarantined"] == 0
    for name in ("my file.csv", "-export.csv", "export.tsv"):
        assert (by_key[name]["status"], by_key[name]["quarantined"], by_key[name]["accepted"]) == (
            "not ingested",
            1,
            0,
        )
    for name in ("corrupt.parquet", "latin1.csv", "semicolons.csv"):
        assert by_key[name]["status"] == "unreadable" and by_key[name]["quarantined"] == 1
    assert by_key["empty.csv"]["delivered"] == by_key["header-only.csv"]["delivered"] == 0
    reasons = result.reasons()
    for expected in (
        "amount is not a number",
        "amount is not finite",
        "amount is not positive",
        "currency: not one of the region's ['EUR', 'GBP']",
        f"file transactions/{DAY}/lines.jsonl: line 2 is not JSON",
        f"file transactions/{DAY}/lines.jsonl: line 3 is a JSON list, not an object",
        f"file transactions/{DAY}/no-amount.csv: missing required column(s) ['amount']",
        f"file transactions/{DAY}/corrupt.parquet: unreadable parquet file",
        f"file transactions/{DAY}/latin1.csv: unreadable csv file",
        f"file transactions/{DAY}/semicolons.csv: unreadable csv file: its header is separated by ';'",
        f"file transactions/{DAY}/my file.csv: not ingested: name must start with a letter or digit and go on "
        "with letters, digits, '.', '_' or '-', at most 200 characters",
        f"file transactions/{DAY}/-export.csv: not ingested: name must start with a letter or digit",
        f"file transactions/{DAY}/export.tsv: not ingested: format '.tsv' is not one of",
    ):
        assert any(r.startswith(expected) for r in reasons), (expected, reasons)
    # Quarantined rows say which file they came from.
    assert set(result.quarantined[PROVENANCE]) >= {
        f"transactions/{DAY}/mixed.csv",
        f"transactions/{DAY}/corrupt.parquet",
    }


def test_a_record_that_is_no_single_value_is_its_own_quarantine_row_and_a_broken_csv_says_where(
    tmp_path, eu_west
):
    """Found by probing with files users bring: a Parquet id column of bytes that are not UTF-8
    failed the whole day's ingestion; a list in an id column was accepted as the id
    "shape: (2,) Series: ..."; a JSON object in a text column was accepted as its JSON text; a
    CSV header naming `amount` twice took the first silently; a CSV's trailing blank lines were
    quarantined as records "missing transaction_id"; a ragged CSV line was "found more fields
    than defined in 'Schema'", not where."""
    rows = _rows(eu_west, 3)
    ids = rows["transaction_id"].to_list()
    raw = rows.with_columns(pl.Series("transaction_id", [ids[0].encode(), b"\xff\xfe", ids[2].encode()]))
    _deliver(tmp_path, f"transactions/{DAY}/bytes.parquet", raw)
    listed = rows.with_columns(pl.Series("device_id", [None, ["dv-1", "dv-2"], None]))
    _deliver(
        tmp_path, f"transactions/{DAY}/lists.parquet", listed.with_columns(pl.col("transaction_id") + "-l")
    )
    lines = [
        {**rows.row(0, named=True), "transaction_id": "j-1", "event_time": f"{DAY}T08:00:00Z"},
        {
            **rows.row(1, named=True),
            "transaction_id": "j-2",
            "event_time": f"{DAY}T08:00:00Z",
            "email": {"a": 1},
        },
        {**rows.row(2, named=True), "transaction_id": "j-3", "event_time": f"{DAY}T08:00:00Z", "note": [1]},
    ]
    _deliver(
        tmp_path, f"transactions/{DAY}/objects.jsonl", b"\n".join(orjson.dumps(x, default=str) for x in lines)
    )
    text = _csv(rows.with_columns(pl.col("transaction_id") + "-b")).decode()
    _deliver(tmp_path, f"transactions/{DAY}/blank.csv", (text + "\n\n").encode())
    header, first, *rest = _csv(rows.with_columns(pl.col("transaction_id") + "-r")).decode().splitlines()
    _deliver(
        tmp_path,
        f"transactions/{DAY}/ragged.csv",
        "\n".join([header, first, rest[0] + ",EXTRA", *rest[1:]]).encode(),
    )
    _deliver(tmp_path, f"transactions/{DAY}/twice.csv", (header + ",amount\n" + first + ",1.00\n").encode())
    result = _ingest(tmp_path, eu_west)
    _reconciles(result)
    by_key = {r["key"].rsplit("/", 1)[1]: r for r in result.files.iter_rows(named=True)}
    assert (by_key["bytes.parquet"]["accepted"], by_key["bytes.parquet"]["quarantined"]) == (2, 1)
    assert (by_key["lists.parquet"]["accepted"], by_key["lists.parquet"]["quarantined"]) == (2, 1)
    # An object in a contract column is a quarantined line; in a column outside it, ignored.
    assert (by_key["objects.jsonl"]["accepted"], by_key["objects.jsonl"]["quarantined"]) == (2, 1)
    assert (by_key["blank.csv"]["delivered"], by_key["blank.csv"]["accepted"]) == (3, 3)
    for name in ("ragged.csv", "twice.csv"):
        assert by_key[name]["status"] == "unreadable" and by_key[name]["quarantined"] == 1
    reasons = result.reasons()
    for expected in (
        f"file transactions/{DAY}/bytes.parquet: row 2: 'transaction_id' holds bytes that are not UTF-8 text",
        f"file transactions/{DAY}/lists.parquet: row 2: 'device_id' holds a list, not a value",
        f"file transactions/{DAY}/objects.jsonl: line 2: 'email' holds a JSON object, not a value",
        f"file transactions/{DAY}/ragged.csv: unreadable csv file: line 3 has 13 fields, its header 12",
        f"file transactions/{DAY}/twice.csv: unreadable csv file: its header names ['amount'] more than once",
    ):
        assert expected in reasons, (expected, reasons)
    assert set(result.accepted["transaction_id"]) >= {ids[0], ids[2], "j-1", "j-3"}
    assert not any("shape:" in t for t in result.accepted["transaction_id"])


def test_a_file_delivered_twice_is_one_delivery_and_a_changed_file_keeps_its_first_version(tmp_path, eu_west):
    root = tmp_path / "eu-west"
    first = _rows(eu_west, 30)
    path = _deliver(root, f"transactions/{DAY}/batch-1.csv", _csv(first))
    once = _ingest(root, eu_west)
    assert landing.pending(root) == ([], [])
    # The same bytes again (a producer's retry): nothing pending, the same rows.
    _deliver(root, f"transactions/{DAY}/batch-1.csv", _csv(first))
    assert landing.pending(root)[0] == []  # touched, same content: not re-read
    again = _ingest(root, eu_west)
    assert again.accepted.equals(once.accepted) and again.files["status"].to_list() == ["ingested before"]
    # The same rows under another name: every row is an identical copy of an accepted one.
    _deliver(root, f"transactions/{DAY}/batch-1-copy.csv", _csv(first))
    copied = _ingest(root, eu_west)
    _reconciles(copied)
    assert copied.accepted.equals(once.accepted)
    assert copied.reasons() == {"duplicate transaction_id (identical copy of an accepted row)": 30}
    # Changed under its old name: the first version stays, the new content is quarantined.
    changed = first.with_columns(pl.col("amount") * 2)
    path.write_bytes(_csv(changed))
    assert [f.key for f in landing.pending(root)[0]] == [f"transactions/{DAY}/batch-1.csv"]
    after = _ingest(root, eu_west)
    _reconciles(after)
    assert after.accepted.equals(once.accepted)
    changed_rows = after.quarantined.filter(pl.col("reason").str.contains(landing.CHANGED_REASON))
    assert changed_rows.height == 30 and changed_rows["amount"].cast(pl.Float64).sum() == pytest.approx(
        changed["amount"].sum()
    )
    assert landing.pending(root)[0] == []  # judged once; re-runs judge it the same way
    # Removed by its producer after ingestion: the archived copy keeps the lake whole.
    path.unlink()
    (landing.landing_root(root) / f"transactions/{DAY}/batch-1-copy.csv").unlink()
    removed = _ingest(root, eu_west)
    assert removed.accepted.equals(once.accepted)
    assert set(removed.files["status"]) == {"removed from landing"}


def test_out_of_order_days_and_a_file_arriving_during_ingestion(tmp_path, eu_west):
    root = tmp_path / "eu-west"
    later, earlier = "2026-01-14", "2026-01-13"
    _deliver(root, f"transactions/{later}/a.parquet", _rows(eu_west, 20, later))
    _deliver(root, f"transactions/{earlier}/a.parquet", _rows(eu_west, 20, earlier))
    _deliver(root, "transactions/2026-02-30/a.csv", b"x")
    _deliver(root, f"transactions/{later}/report.xlsx", b"x")
    _deliver(root, "transactions/loose.csv", b"x")
    pending, misplaced = landing.pending(root)
    assert sorted(landing.day_of(f.key) for f in pending) == [earlier, later]
    assert {m.key for m in misplaced} == {
        "transactions/2026-02-30/a.csv",
        f"transactions/{later}/report.xlsx",
        "transactions/loose.csv",
    }
    assert _ingest(root, eu_west, later).accepted.height == 20
    # A file lands after ingestion listed the day and before it recorded what it read.
    delivery = landing.collect_day(root, "transactions", earlier)
    _deliver(
        root,
        f"transactions/{earlier}/b.parquet",
        _rows(eu_west, 20, earlier).with_columns(pl.col("transaction_id") + "b"),
    )
    landing.commit_day(root, "transactions", earlier, delivery)
    assert [f.key for f in landing.pending(root)[0]] == [f"transactions/{earlier}/b.parquet"]  # not lost
    assert _ingest(root, eu_west, earlier).accepted.height == 40
    assert landing.pending(root)[0] == []


def _region_day(request: dg.RunRequest) -> tuple[str, str]:
    keys = request.partition_key.keys_by_dimension
    return keys["region"], keys["day"]


def test_the_sensor_starts_ingestion_of_delivered_files_and_the_lake_holds_them(
    tmp_path, topology, monkeypatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    region = topology.region("eu-west")
    root = region_paths(region, home).root
    alerts = home / "alerts" / "alerts.jsonl"
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=200),
        "alerting": AlertingResource(path=str(alerts)),
    }
    user = _rows(region, 25).with_columns(pl.col("transaction_id") + "-user")
    _deliver(root, f"transactions/{DAY}/partner.csv", _csv(user))
    _deliver(root, f"transactions/{DAY}/notes.txt", b"hello")
    # The generator delivers inside the ingestion run that reads its file: not a reason for a run.
    _deliver(root, f"chargebacks/2026-01-11/{landing.GENERATOR_FILE}", b"written by a run in flight")
    defs = load_definitions_module().defs
    with dg.instance_for_test() as instance:

        def tick():
            context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
            return landing_sensor.evaluate_tick(context)

        requests = tick().run_requests
        assert [_region_day(r) for r in requests] == [("eu-west", DAY)]
        assert "notes.txt" in alerts.read_text() and "is not ingested" in alerts.read_text()
        result = dg.materialize(
            [transactions_ingestion, labels_ingestion],
            resources=resources,
            instance=instance,
            partition_key=requests[0].partition_key,
        )
        assert result.success
        checks = [e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILIATION_CHECK]
        assert checks and all(c.passed for c in checks)
        lake = lake_day(root / "lake", "raw_transactions", DAY)
        # The generator's delivery and the partner's, both in the day.
        assert lake.filter(pl.col("transaction_id").str.ends_with("-user")).height == 25
        assert lake.height > 200
        assert (landing.landing_root(root) / f"transactions/{DAY}/{landing.GENERATOR_FILE}").exists()
        assert tick().run_requests == []  # everything delivered is ingested
        # New days at the frontier: one run each.
        _deliver(root, "transactions/2026-01-13/partner.csv", _csv(_rows(region, 5, "2026-01-13")))
        _deliver(root, "transactions/2026-01-14/partner.csv", _csv(_rows(region, 5, "2026-01-14")))
        keys = sorted(_region_day(r) for r in tick().run_requests)
        assert keys == [("eu-west", "2026-01-13"), ("eu-west", "2026-01-14")]
        for day in ("2026-01-13", "2026-01-14"):
            partition = dg.MultiPartitionKey({"region": "eu-west", "day": day})
            assert dg.materialize(
                [transactions_ingestion], resources=resources, instance=instance, partition_key=partition
            ).success
        # Late data: a file for a day before the last ingested one changes the windows of every
        # day after it, so one ranged run covers it through the last ingested day.
        _deliver(root, "chargebacks/2026-01-10/partner.csv", b"transaction_id,chargeback_at\n")
        (late,) = tick().run_requests
        assert late.partition_key is None
        assert late.tags["dagster/asset_partition_range_start"] == "2026-01-10|eu-west"
        assert late.tags["dagster/asset_partition_range_end"] == "2026-01-14|eu-west"
        assert dg.materialize(
            [transactions_ingestion, labels_ingestion], resources=resources, instance=instance, tags=late.tags
        ).success
        assert tick().run_requests == []


def test_the_readmes_example_file_is_the_documented_one_and_is_accepted_whole(tmp_path, eu_west):
    from meridian.paths import REPO_ROOT

    example = REPO_ROOT / "docs/examples/landing/transactions/2026-01-12/partner-0001.csv"
    assert example.read_text().strip() in (REPO_ROOT / "README.md").read_text()
    root = tmp_path / "eu-west"
    _deliver(root, "transactions/2026-01-12/partner-0001.csv", example.read_bytes())
    result = _ingest(root, eu_west, "2026-01-12")
    assert result.quarantined.height == 0 and result.accepted.height == 2
    # The +01:00 time is stored as UTC.
    assert str(result.accepted["event_time"][1]) == "2026-01-12 10:02:45+00:00"


def test_a_link_in_one_zones_landing_to_another_zones_data_is_refused(tmp_path, topology):
    """Residency: a symbolic link (file or folder) in eu-west's landing zone pointing at
    us-east's raw data must not bring us-east's personal data into eu-west, not even into its
    quarantine; a pipe must not hang ingestion."""
    eu, us = topology.region("eu-west"), topology.region("us-east")
    us_file = tmp_path / "us-east" / "lake" / "raw.parquet"
    us_file.parent.mkdir(parents=True)
    us_rows = _rows(us, 30)
    us_rows.write_parquet(us_file)
    root = tmp_path / "eu-west"
    day_dir = landing.landing_root(root) / f"transactions/{DAY}"
    day_dir.mkdir(parents=True)
    (day_dir / "linked.parquet").symlink_to(us_file)
    (landing.landing_root(root) / "transactions" / "2026-01-13").symlink_to(
        us_file.parent, target_is_directory=True
    )
    os.mkfifo(day_dir / "pipe.csv")
    _deliver(root, f"transactions/{DAY}/own.parquet", _rows(eu, 10))
    pending, misplaced = landing.pending(root)
    assert [f.key for f in pending] == [f"transactions/{DAY}/own.parquet"]
    assert {m.key for m in misplaced} == {
        f"transactions/{DAY}/linked.parquet",
        f"transactions/{DAY}/pipe.csv",
        "transactions/2026-01-13",
    }
    result = _ingest(root, eu)
    written = pl.concat([result.accepted.select("customer_id"), result.quarantined.select("customer_id")])
    assert not written["customer_id"].is_in(us_rows["customer_id"].implode()).any()
    assert result.accepted.height == 10
    # The link and the pipe in the day's folder are one quarantine row each, the reason and
    # nothing of what they point at.
    assert result.quarantined["customer_id"].null_count() == result.quarantined.height == 2
    assert all("not ingested" in r for r in result.quarantined["reason"].to_list())
    # Swapped for a link after it was ingested: the archived copy stays; the link is not read.
    (day_dir / "own.parquet").unlink()
    (day_dir / "own.parquet").symlink_to(us_file)
    again = _ingest(root, eu)
    assert again.accepted.equals(result.accepted)
    assert again.quarantined["customer_id"].null_count() == again.quarantined.height == 3
