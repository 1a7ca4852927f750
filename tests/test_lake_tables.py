"""The lake's Delta tables on a local folder and on a region's object store (a moto S3 server
per region on loopback, tests/object_stores.py), and their replication between two regions'
stores by the commit log. Writers are killed for real (SIGKILL of a writing process)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from meridian.governance import ResidencyViolation, default_policy
from meridian.lake_replication import ReplicaDiverged, replicate_table
from meridian.lake_tables import LakeLocation, LakeTable, LakeTableError
from meridian.object_store import S3Location, list_objects
from meridian.topology import load_topology
from tests.object_stores import start_region_store

REPO = Path(__file__).resolve().parent.parent
DAY = date(2026, 1, 12)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lake-stores")
    started = {region: start_region_store(region, workdir) for region in ("eu-west", "eu-central", "us-east")}
    yield started
    for store in started.values():
        store.process.terminate()
        store.process.wait(timeout=10)


def _s3(store, prefix: str) -> S3Location:
    return S3Location(
        store.region, store.bucket, prefix, store.endpoint, store.access_key_id, store.secret_access_key
    )


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path, stores) -> LakeLocation:
    if request.param == "local":
        return LakeLocation.local(tmp_path / "lake")
    return LakeLocation.on_object_store(
        _s3(stores["eu-west"], f"lake-{request.node.name.split('[')[0][-40:]}-{time.time_ns()}")
    )


def _rows(n: int, generation: int, day: date = DAY) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transaction_id": [f"t{day:%m%d}-{i}" for i in range(n)],
            "customer_id": [f"c{i % 7}" for i in range(n)],
            "amount": [float(i) + generation / 1000 for i in range(n)],
            "generation": [generation] * n,
        },
        schema={
            "transaction_id": pl.String,
            "customer_id": pl.String,
            "amount": pl.Float64,
            "generation": pl.Int64,
        },
    )


def test_a_day_is_replaced_in_one_commit_and_every_version_stays_readable(location):
    table = location.table("raw_transactions", ("day", "origin"))
    assert table.version() is None and table.read() is None
    first = table.replace(_rows(5, 1), day=DAY, origin="source")
    table.replace(_rows(3, 1, DAY + timedelta(days=1)), day=DAY + timedelta(days=1), origin="source")
    served = table.replace(_rows(2, 9), day=DAY, origin="served")
    second = table.replace(_rows(4, 2), day=DAY, origin="source")
    assert (first.version, served.version, second.version) == (0, 2, 3)
    assert (second.rows, second.added_files, second.removed_files) == (4, 1, 1)

    now = table.read(where={"day": DAY})
    assert sorted(now.group_by("origin", "generation").len().rows()) == [("served", 9, 2), ("source", 2, 4)]
    then = table.read(version=first.version)
    assert then.height == 5 and set(then["generation"]) == {1}
    other_day = table.read(where={"day": [DAY + timedelta(days=1)]})
    assert other_day.height == 3  # replacing one day never touched another

    # An empty list of days (the first day of history has no earlier days) matches nothing.
    assert table.read(where={"day": [], "origin": "served"}).height == 0
    with pytest.raises(LakeTableError, match=r"'amount' is not a partition column"):
        table.read(where={"amount": 1.0})

    emptied = table.replace(_rows(0, 3), day=DAY, origin="source")
    assert emptied.rows == 0 and emptied.removed_files == 1
    assert table.read(where={"day": DAY, "origin": "source"}).height == 0
    assert table.read(version=second.version, where={"day": DAY, "origin": "source"}).height == 4


def test_several_days_are_replaced_in_one_commit_with_their_rows_read_back_per_day(location):
    """A backfill's days in one commit: a reader sees all of them or none; the commit says how
    many rows each day holds; an empty day empties its partition; the other origin is kept."""
    table = location.table("raw_transactions", ("day", "origin"))
    days = [DAY + timedelta(days=i) for i in range(3)]
    table.replace(_rows(2, 9, days[0]), day=days[0], origin="served")
    table.replace(_rows(6, 1, days[2]), day=days[2], origin="source")
    before = table.version()
    commit = table.replace_partitions(
        [
            ({"day": days[0], "origin": "source"}, _rows(5, 2, days[0])),
            ({"day": days[1], "origin": "source"}, _rows(4, 2, days[1])),
            ({"day": days[2], "origin": "source"}, _rows(0, 2, days[2])),  # emptied
        ]
    )
    assert commit.version == before + 1  # one commit for the three days
    key = lambda d: (d.isoformat(), "source")  # noqa: E731
    assert commit.partition_rows == {key(days[0]): 5, key(days[1]): 4}
    assert commit.partition_bytes[key(days[0])] > 0 and commit.rows == 9
    now = table.read()
    assert sorted(now.group_by("day", "origin").len().rows()) == [
        (days[0].isoformat(), "served", 2),
        (days[0].isoformat(), "source", 5),
        (days[1].isoformat(), "source", 4),
    ]
    assert table.read(version=before).filter(pl.col("origin") == "source").height == 6  # the version before
    with pytest.raises(LakeTableError, match="named twice"):
        table.replace_partitions(
            [({"day": DAY, "origin": "source"}, _rows(1, 3)), ({"day": DAY, "origin": "source"}, _rows(1, 3))]
        )
    assert table.version() == commit.version  # a refused replacement commits nothing


def test_a_frame_that_does_not_match_the_tables_schema_is_refused_not_cast(location):
    table = location.table("raw_labels")
    table.replace(_rows(3, 1), day=DAY)
    with pytest.raises(LakeTableError, match=r"amount: string where the table has double"):
        table.replace(_rows(3, 2).with_columns(pl.col("amount").cast(pl.String)), day=DAY)
    with pytest.raises(LakeTableError, match=r"generation: missing"):
        table.replace(_rows(3, 2).drop("generation"), day=DAY)
    with pytest.raises(LakeTableError, match=r"not a plain value"):
        table.replace(_rows(3, 2), day="2026-01-12' OR 'x' = 'x")
    with pytest.raises(LakeTableError, match=r"names every partition column"):
        table.replace(_rows(3, 2), origin="source")
    with pytest.raises(LakeTableError, match=r"not a lake table name"):
        location.table("../escape")
    assert table.version() == 0 and set(table.read()["generation"]) == {1}


_WRITER = """
import sys, polars as pl
from datetime import date
sys.path.insert(0, {repo!r})
from meridian.lake_tables import LakeLocation
from meridian.object_store import S3Location
{location}
table = location.table("raw_transactions", ("day",))
generation = 100
while True:
    generation += 1
    n = 20_000 + generation % 7 * 1000
    frame = pl.DataFrame({{"transaction_id": [f"g{{generation}}-{{i}}" for i in range(n)],
        "customer_id": ["c"] * n, "amount": [1.0] * n, "generation": [generation] * n}})
    table.replace(frame, day=date(2026, 1, 12))
    print(generation, flush=True)
"""


def _s3_literal(s3: S3Location) -> str:
    """Source text that rebuilds `s3` in a child process (its repr hides the credentials)."""
    fields = (s3.region, s3.bucket, s3.prefix, s3.endpoint_url, s3.access_key_id, s3.secret_access_key)
    return f"S3Location({', '.join(repr(f) for f in fields)})"


def _writer_source(location: LakeLocation) -> str:
    if location.s3 is None:
        return f"location = LakeLocation.local({location.uri!r})"
    return f"location = LakeLocation.on_object_store({_s3_literal(location.s3)})"


def test_a_writer_killed_at_any_moment_leaves_only_whole_committed_versions(location, tmp_path):
    table = location.table("raw_transactions", ("day",))
    table.replace(_rows(10, 1), day=DAY)
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(repo=str(REPO), location=_writer_source(location)))
    rng = random.Random(17)
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip(), "the writer committed nothing"  # it is mid-loop now
        time.sleep(rng.uniform(0.0, 0.4))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        rows = table.read(where={"day": DAY})
        (generation,) = set(rows["generation"])  # one writer's version of the day, never two
        assert rows.height == 20_000 + generation % 7 * 1000  # and all of it
    versions = table.version()
    for version in range(versions + 1):
        assert table.read(version=version).select(pl.col("generation").n_unique()).item() == 1


def test_concurrent_writers_of_one_table_serialise_by_retrying_their_commit(location):
    table = location.table("raw_transactions", ("day",))
    table.replace(_rows(2, 0), day=DAY - timedelta(days=1))
    errors: list[BaseException] = []
    commits = []

    def write(writer: int) -> None:
        try:
            commits.append(
                table.replace(
                    _rows(50, writer, DAY + timedelta(days=writer % 3)), day=DAY + timedelta(days=writer % 3)
                )
            )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(c.version for c in commits) == list(range(1, 7))  # one version each, none lost
    assert max(c.attempts for c in commits) > 1  # they did race
    final = table.read()
    for offset in range(3):
        day = final.filter(pl.col("day") == (DAY + timedelta(days=offset)).isoformat())
        assert day.height == 50 and day["generation"].n_unique() == 1  # one whole write per day
    assert final.filter(pl.col("day") == (DAY - timedelta(days=1)).isoformat()).height == 2


# -- replication between two regions' object stores ---------------------------------------


@pytest.fixture
def pair(stores):
    tag = f"rep-{time.time_ns()}"
    return _s3(stores["eu-west"], tag), _s3(stores["eu-central"], tag)


def _fill(location: S3Location, days: int = 4) -> LakeTable:
    table = LakeLocation.on_object_store(location).table("raw_transactions", ("day",))
    for offset in range(days):
        table.replace(_rows(30, 1, DAY + timedelta(days=offset)), day=DAY + timedelta(days=offset))
    return table


def _replica(location: S3Location) -> LakeTable:
    return LakeLocation.on_object_store(location).table("raw_transactions", ("day",))


def test_replication_copies_files_then_log_and_then_only_what_changed(pair):
    source_loc, target_loc = pair
    source = _fill(source_loc)
    topology, policy = load_topology(), default_policy()
    full = replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    assert (full.replica_version_before, full.replica_version) == (None, 3)
    assert (full.log_entries_copied, full.data_files_copied) == (4, 4)
    assert _replica(target_loc).read().sort("transaction_id").equals(source.read().sort("transaction_id"))

    source.replace(_rows(30, 2, DAY), day=DAY)
    again = replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    assert (again.log_entries_copied, again.data_files_copied, again.replica_version) == (1, 1, 4)
    assert again.bytes_copied < full.bytes_copied / 2
    replica = _replica(target_loc)
    assert replica.read().sort("transaction_id").equals(source.read().sort("transaction_id"))
    assert (
        replica.read(version=3).sort("transaction_id").equals(source.read(version=3).sort("transaction_id"))
    )
    nothing = replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    assert (nothing.log_entries_copied, nothing.data_files_copied) == (0, 0)

    copied = {
        o.key
        for o in list_objects(target_loc, target_loc.client(), "raw_transactions/")
        if "_delta_log" not in o.key
    }
    head = target_loc.client().head_object(Bucket=target_loc.bucket, Key=target_loc.key(sorted(copied)[0]))
    assert len(head["Metadata"]["xxh3-128"]) == 32  # checksummed, the checksum kept with the object


_REPLICATOR = """
import sys
sys.path.insert(0, {repo!r})
from meridian.governance import default_policy
from meridian.lake_replication import replicate_table
from meridian.object_store import S3Location
from meridian.topology import load_topology
source = {source}
target = {target}
replicate_table(source, target, "raw_transactions", load_topology(), default_policy(), threads=1)
"""


def _killed_replication(source: S3Location, target: S3Location, failpoint: str, tmp_path: Path) -> None:
    script = tmp_path / "replicate.py"
    script.write_text(
        _REPLICATOR.format(repo=str(REPO), source=_s3_literal(source), target=_s3_literal(target))
    )
    run = subprocess.run(
        [sys.executable, str(script)], env={**os.environ, "MERIDIAN_FAILPOINT": failpoint}, timeout=60
    )
    assert run.returncode == -signal.SIGKILL


def test_a_replication_killed_midway_leaves_a_readable_replica_and_resumes(pair, tmp_path):
    source_loc, target_loc = pair
    source = _fill(source_loc, days=2)
    topology, policy = load_topology(), default_policy()
    replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    for offset in range(2, 6):
        source.replace(_rows(30, 1, DAY + timedelta(days=offset)), day=DAY + timedelta(days=offset))

    _killed_replication(source_loc, target_loc, "lake_replication.file_copied:2", tmp_path)
    replica = _replica(target_loc)
    assert replica.version() == 1 and replica.read().height == 60  # two files arrived; no log entry did

    _killed_replication(source_loc, target_loc, "lake_replication.log_entry_copied:2", tmp_path)
    assert replica.version() == 3 and replica.read().height == 120  # a version whose files are all there

    resumed = replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    assert resumed.replica_version_before == 3 and resumed.replica_version == 5
    assert resumed.data_files_copied == 0 and resumed.data_files_present == 2
    assert replica.read().sort("transaction_id").equals(source.read().sort("transaction_id"))


def test_a_replica_that_took_writes_of_its_own_is_not_overwritten(pair):
    source_loc, target_loc = pair
    source = _fill(source_loc, days=1)
    topology, policy = load_topology(), default_policy()
    replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    _replica(target_loc).replace(_rows(7, 5), day=DAY)  # the DR site committed version 1 itself
    source.replace(_rows(9, 6), day=DAY)  # and so did the source
    with pytest.raises(ReplicaDiverged, match="differs from the source"):
        replicate_table(source_loc, target_loc, "raw_transactions", topology, policy)
    assert set(_replica(target_loc).read()["generation"]) == {5}


def test_personal_columns_never_replicate_to_another_zone(stores):
    tag = f"zone-{time.time_ns()}"
    source_loc, foreign = _s3(stores["eu-west"], tag), _s3(stores["us-east"], tag)
    _fill(source_loc, days=1)
    with pytest.raises(ResidencyViolation, match="customer_id"):
        replicate_table(source_loc, foreign, "raw_transactions", load_topology(), default_policy())
    assert not list(list_objects(foreign, foreign.client(), "raw_transactions/"))  # not one byte moved


def test_a_source_whose_old_log_was_cleaned_up_replicates_from_its_checkpoint(pair):
    source_loc, target_loc = pair
    source = _fill(source_loc, days=3)
    delta = source._open()
    delta.create_checkpoint()
    client = source_loc.client()
    for version in (0, 1):  # as log retention does
        client.delete_object(
            Bucket=source_loc.bucket, Key=source_loc.key(f"raw_transactions/_delta_log/{version:020d}.json")
        )
    source.replace(_rows(30, 4, DAY), day=DAY)
    result = replicate_table(source_loc, target_loc, "raw_transactions", load_topology(), default_policy())
    assert result.replica_version == 3
    assert _replica(target_loc).read().sort("transaction_id").equals(source.read().sort("transaction_id"))


def test_the_warehouse_follows_the_lake_by_its_log_reloading_only_what_changed(location):
    import duckdb

    from meridian.lake_sync import sync_lake, synced_versions

    table = location.table("raw_transactions")
    for offset in range(4):
        table.replace(
            _rows(20, 1, DAY + timedelta(days=offset)), day=DAY + timedelta(days=offset), origin="source"
        )
    con = duckdb.connect()
    (first, absent) = sync_lake(con, location, ["raw_transactions", "raw_labels"])
    assert (first.mode, first.rows, absent.mode) == ("full", 80, "absent")

    table.replace(_rows(5, 2, DAY), day=DAY, origin="source")  # a day replaced
    table.replace(_rows(3, 9, DAY), day=DAY, origin="served")  # the service's share of it
    table.replace(_rows(0, 3), day=DAY + timedelta(days=1), origin="source")  # a day emptied
    (again,) = sync_lake(con, location, ["raw_transactions"])
    assert (again.mode, again.partitions, again.rows) == ("incremental", 3, 8)
    assert (again.previous, again.version) == (3, 6) and synced_versions(con) == {"raw_transactions": 6}
    (nothing,) = sync_lake(con, location, ["raw_transactions"])
    assert nothing.mode == "unchanged"

    fresh = duckdb.connect()
    sync_lake(fresh, location, ["raw_transactions"])
    query = "select * from lake.raw_transactions order by day, origin, transaction_id"
    assert con.execute(query).fetchall() == fresh.execute(query).fetchall()
    assert len(con.execute(query).fetchall()) == 20 + 20 + 5 + 3

    pinned = duckdb.connect()
    (old,) = sync_lake(pinned, location, ["raw_transactions"], versions={"raw_transactions": 3})
    assert (old.mode, old.version, old.rows) == ("full", 3, 80)

    # The ids held more than once, derived in the same transaction as each load (the
    # service's copies of three ids of the replaced day): after the full load, after the
    # incremental one, on a fresh warehouse and at a pinned version.
    repeated = "select transaction_id, copies from lake.raw_transactions_repeated order by 1"
    expected = [(f"t{DAY:%m%d}-{i}", 2) for i in range(3)]
    assert con.execute(repeated).fetchall() == expected == fresh.execute(repeated).fetchall()
    assert pinned.execute(repeated).fetchall() == []
    # A warehouse synced before the table was derived gets it at its next sync.
    con.execute("drop table lake.raw_transactions_repeated")
    (unchanged,) = sync_lake(con, location, ["raw_transactions"])
    assert unchanged.mode == "unchanged" and con.execute(repeated).fetchall() == expected
