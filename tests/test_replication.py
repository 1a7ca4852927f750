"""The replication engine: incremental, checksummed, table-consistent, resumable, residency-checked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from meridian import dr, governance
from meridian.lake import write_parquet_atomic
from meridian.paths import REPO_ROOT, region_paths
from meridian.replication import Replica, UnreadableSource, hash_file, walk
from meridian.topology import load_topology


def _table(root: Path, files: int, rows: int = 2000, seed: int = 0) -> None:
    for i in range(files):
        frame = pl.DataFrame(
            {"transaction_id": [f"t{seed}-{i}-{j}" for j in range(rows)], "amount": range(rows)}
        )
        write_parquet_atomic(
            frame, root / "lake" / "raw_transactions" / f"day=2026-01-{i + 1:02d}" / "data.parquet"
        )


def _read_version(rep: Replica) -> dict[str, bytes]:
    """What a replica reader sees: every file of the current version, resolved through CURRENT."""
    manifest = rep.manifest()
    return {rel: rep.resolve(rel).read_bytes() for rel in manifest["files"]}


def test_only_new_or_changed_files_are_copied_and_every_copy_is_verified(tmp_path):
    src, rep = tmp_path / "src", Replica(tmp_path / "replica")
    _table(src, 5)
    first = rep.replicate(walk(src, ["lake"]))
    assert (first.version, first.copied_files, first.files) == (1, 5, 5)
    again = rep.replicate(walk(src, ["lake"]))
    assert (again.copied_files, again.unchanged_files, again.published) == (0, 5, False)
    _table(src, 1, seed=9)  # day 1 replaced with new content
    write_parquet_atomic(
        pl.DataFrame({"transaction_id": ["x"]}),
        src / "lake" / "raw_transactions" / "day=2026-01-06" / "data.parquet",
    )
    third = rep.replicate(walk(src, ["lake"]))
    assert third.version == 2
    assert third.copied_files == 2 and third.unchanged_files == 4
    assert third.changed == [
        "lake/raw_transactions/day=2026-01-01/data.parquet",
        "lake/raw_transactions/day=2026-01-06/data.parquet",
    ]
    seen = _read_version(rep)
    for rel, payload in seen.items():
        assert payload == (src / rel).read_bytes()
        assert hash_file(rep.resolve(rel))[0] == rep.manifest()["files"][rel]["checksum"]
    # A removed source file leaves the next version.
    os.remove(src / "lake" / "raw_transactions" / "day=2026-01-06" / "data.parquet")
    fourth = rep.replicate(walk(src, ["lake"]))
    assert fourth.removed_files == 1 and len(rep.manifest()["files"]) == 5


def test_a_corrupt_source_file_is_never_published_and_the_good_version_stays_current(tmp_path):
    """Before: a truncated Parquet file in the primary lake was replicated and CURRENT moved to
    a version whose file could not be read; the good copy survived only in an older manifest."""
    src, rep = tmp_path / "src", Replica(tmp_path / "replica")
    _table(src, 3)
    assert rep.replicate(walk(src, ["lake"])).version == 1
    good = _read_version(rep)
    _table(src, 2, seed=5)  # days 1 and 2 rewritten...
    broken = src / "lake" / "raw_transactions" / "day=2026-01-02" / "data.parquet"
    broken.write_bytes(broken.read_bytes()[:-100])  # ...and day 2 then truncated in place
    (src / "lake" / "notes.json").write_text("{not json")
    with pytest.raises(UnreadableSource) as raised:
        rep.replicate(walk(src, ["lake"]))
    assert set(raised.value.problems) == {
        "lake/raw_transactions/day=2026-01-02/data.parquet",
        "lake/notes.json",
    }
    assert "truncated" in raised.value.problems["lake/raw_transactions/day=2026-01-02/data.parquet"]
    assert rep.current_version() == 1 and _read_version(rep) == good  # readers see the last good version
    for rel in good:
        pl.read_parquet(rep.resolve(rel))
    # Once the source is repaired, the next run publishes, reusing what already arrived.
    _table(src, 2, seed=5)
    (src / "lake" / "notes.json").write_text("{}")
    fixed = rep.replicate(walk(src, ["lake"]))
    assert fixed.version == 2 and fixed.reused_files == 1 and fixed.copied_files == 2


def _kill_midway(src: Path, replica: Path, failpoint: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from meridian.replication import Replica, walk
        Replica(Path({str(replica)!r})).replicate(walk(Path({str(src)!r}), ["lake"]), threads=1)
        """
    )
    env = {**os.environ, "MERIDIAN_FAILPOINT": failpoint}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, timeout=120
    )


@pytest.mark.parametrize("failpoint", ["replication.object_written:3", "replication.before_publish"])
def test_a_replication_killed_midway_leaves_the_old_version_and_resumes_without_recopying(
    tmp_path, failpoint
):
    src, rep = tmp_path / "src", Replica(tmp_path / "replica")
    _table(src, 4)
    rep.replicate(walk(src, ["lake"]))
    old = _read_version(rep)
    _table(src, 8, seed=1)  # 4 changed days and 4 new ones
    killed = _kill_midway(src, rep.root, failpoint)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    # The reader sees exactly the old version: every file of it, none of the new one.
    assert rep.current_version() == 1
    assert _read_version(rep) == old
    assert rep.scrub() == []
    arrived = len(list(rep.objects.glob("*/*"))) - 4
    assert arrived >= 3
    resumed = rep.replicate(walk(src, ["lake"]))
    assert resumed.version == 2
    # What had arrived is not copied again: journal entries make it "unchanged".
    assert resumed.copied_files == 8 - arrived
    assert resumed.copied_files + resumed.unchanged_files == 8
    assert {rel: p for rel, p in _read_version(rep).items()} == {
        s.rel: s.path.read_bytes() for s in walk(src, ["lake"])
    }


def test_a_corrupted_replica_object_is_detected_and_copied_again(tmp_path):
    src, rep = tmp_path / "src", Replica(tmp_path / "replica")
    _table(src, 3)
    rep.replicate(walk(src, ["lake"]))
    rel = "lake/raw_transactions/day=2026-01-02/data.parquet"
    target = rep.resolve(rel)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert rep.scrub() == [rel]
    assert rep.missing() == [rel]
    repaired = rep.replicate(walk(src, ["lake"]))
    assert repaired.copied_files == 1 and repaired.published is False  # same content, same version
    assert rep.scrub() == [] and rep.resolve(rel).read_bytes() == (src / rel).read_bytes()


def test_checkout_is_a_plain_copy_whose_databases_do_not_alias_the_objects(tmp_path):
    src, rep = tmp_path / "src", Replica(tmp_path / "replica")
    _table(src, 2)
    (src / "online").mkdir()
    import sqlite3

    with sqlite3.connect(src / "online" / "online_store.db") as con:
        con.execute("create table t (x)")
    rep.replicate(walk(src, ["lake", "online"]))
    out = tmp_path / "checkout"
    assert rep.checkout(out) == 3
    db = out / "online" / "online_store.db"
    db.write_bytes(b"changed in place")  # a database writer at the DR site
    assert rep.scrub() == []
    parquet = out / "lake" / "raw_transactions" / "day=2026-01-01" / "data.parquet"
    assert os.stat(parquet).st_ino == os.stat(rep.resolve(str(parquet.relative_to(out)))).st_ino


def test_personal_data_never_crosses_a_zone_and_nothing_moves_before_the_refusal(tmp_path):
    topology = load_topology()
    home = tmp_path / "home"
    eu = region_paths(topology.region("eu-west"), home)
    frame = pl.DataFrame({"transaction_id": ["t1"], "customer_id": ["euwest-c1"], "email": ["a@b.example"]})
    write_parquet_atomic(frame, eu.table("raw_transactions") / "day=2026-01-01" / "data.parquet")
    with pytest.raises(
        governance.ResidencyViolation, match=r"eu-west \(zone eu\) -> us-west \(zone us\) refused.*email"
    ):
        dr.replicate_class(topology, home, "eu-west", "raw_lake", target_region="us-west")
    us_west = region_paths(topology.region("us-west"), home).root
    assert not (us_west / "replicas").exists()  # not a byte written, not even a folder
    # Aggregate-only files may cross (what the shared global assets hold) ...
    ok = tmp_path / "agg.parquet"
    pl.DataFrame({"merchant_id": ["m1"], "transactions": [40], "fraud_rate": [0.01]}).write_parquet(ok)
    governance.check_transfer(topology, governance.default_policy(), "eu-west", "us-east", [ok], "share")
    # ... an unclassified column may not, nor a file whose content cannot be classified.
    odd = tmp_path / "odd.parquet"
    pl.DataFrame({"mystery": ["x"]}).write_parquet(odd)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00")
    for path in (odd, blob):
        with pytest.raises(governance.ResidencyViolation):
            governance.check_transfer(
                topology, governance.default_policy(), "eu-west", "us-east", [path], "share"
            )


def test_the_dr_pair_must_share_a_zone_and_sync_classes_must_be_sync():
    import yaml

    from meridian.topology import TopologyError, parse_topology

    raw = yaml.safe_load((REPO_ROOT / "platform" / "regions.yaml").read_text())
    raw["regions"][0]["dr_region"] = "eu-central"
    raw["regions"][0]["read_replicas"] = []
    with pytest.raises(TopologyError, match="crosses zones"):
        parse_topology(raw)
    raw = yaml.safe_load((REPO_ROOT / "platform" / "regions.yaml").read_text())
    raw["replication"]["classes"]["model_registry"]["mode"] = "async"
    with pytest.raises(TopologyError, match="model_registry must replicate synchronously"):
        parse_topology(raw)


def test_a_partition_written_on_both_sides_during_a_failover_is_merged_by_key(tmp_path):
    """Late labels landing on both sides: union by transaction id; the later chargeback wins, and a
    tie goes to the DR site's row (the newer write), the same way on every run."""
    from datetime import datetime

    at = lambda h: datetime(2026, 1, 5, h)  # noqa: E731
    primary, failover = tmp_path / "p.parquet", tmp_path / "f.parquet"
    pl.DataFrame(
        {
            "transaction_id": ["t1", "t2", "t4"],
            "chargeback_at": [at(10), at(9), at(8)],
            "reason_code": ["a", "b", "p"],
        }
    ).write_parquet(primary)
    pl.DataFrame(
        {
            "transaction_id": ["t1", "t3", "t4"],
            "chargeback_at": [at(11), at(12), at(8)],
            "reason_code": ["c", "d", "dr"],
        }
    ).write_parquet(failover)
    merged = dr.failover._merge_parquet(primary, failover, "eu-west", "eu-central")
    assert merged.sort("transaction_id").rows() == [
        ("t1", at(11), "c"),
        ("t2", at(9), "b"),
        ("t3", at(12), "d"),
        ("t4", at(8), "dr"),
    ]
    assert dr.failover._merge_parquet(primary, failover, "eu-west", "eu-central").equals(merged)
