"""The online store's side of failover and failback (meridian.dr.failover calls these).

Two kinds of DR copy: the SQLite snapshot every deployment has (the online_store replica
class), and in production a live Redis replica (meridian.redis_replication). Here: the
replica's promotion at failover, its re-attachment at failback, and the online RPO
measured against whichever copy served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from meridian.dr.state import FailoverError
from meridian.lake import write_bytes_atomic
from meridian.online_store import OnlineStoreUnavailable
from meridian.paths import RegionPaths
from meridian.redis_replication import PROMOTED_MARKER, RedisReplicaLink


def promote_for_failover(link: RedisReplicaLink | None, checkout: Path, have_snapshot: bool) -> dict | None:
    """Promote R's live Redis replica and mark the checkout as served by it; the report's entry."""
    if link is None:
        return None
    try:
        before = link.promote()
    except OnlineStoreUnavailable as error:
        if not have_snapshot:
            raise FailoverError(
                f"the Redis replica of {link.region} cannot be promoted ({error}) and there is no "
                "snapshot of its online store to serve instead"
            ) from error
        return {"promoted": False, "serving": "snapshot", "reason": str(error), "replica": link.describe()}
    entry = {
        "promoted": True,
        "serving": "redis replica",
        "replica": link.describe(),
        "link_up_at_promotion": before.link_up,
        "replica_offset_at_promotion": before.replica_offset,
        "keys_at_promotion": before.keys,
    }
    write_bytes_atomic(orjson.dumps({**entry, "promoted_at": time.time()}), checkout / PROMOTED_MARKER)
    return entry


def reattach(link: RedisReplicaLink) -> dict:
    """After failback merged the DR site's rows: the replica follows R again (its full resync
    replaces what it holds). A replica that does not answer is reported, not raised: the
    replica asset re-attaches it on its next run."""
    try:
        link.attach()
        return {"reattached": True, "replica": link.describe()}
    except OnlineStoreUnavailable as error:
        return {"reattached": False, "reason": str(error), "replica": link.describe()}


def snapshot_rows_lost(primary: RegionPaths, rep, used: dict, since: float) -> int | None:
    """Online rows written at the primary before the fault (by write stamp) that the online
    replica used at the failover did not hold."""
    import sqlite3

    from meridian.conflicts import LOGICAL_BITS

    db = primary.root / "online" / "online_store.db"
    entry = used["files"].get("online/online_store.db")
    if not db.is_file():
        return None
    replica_ms = 0
    if entry is not None:
        con = sqlite3.connect(f"file:{rep.object_path(entry['checksum'])}?mode=ro", uri=True)
        try:
            replica_ms = (
                con.execute("select max(hlc) from online_features").fetchone()[0] or 0
            ) >> LOGICAL_BITS
        finally:
            con.close()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "select count(*) from online_features where hlc > ? and hlc <= ?",
            ((replica_ms + 1) << LOGICAL_BITS, (int(since * 1000) + 1) << LOGICAL_BITS),
        ).fetchone()[0]
    finally:
        con.close()


def redis_rows_lost(
    open_store: Callable | None, primary: RegionPaths, link: RedisReplicaLink, dr_name: str, since: float
) -> int:
    """Rows R's Redis wrote before the fault (by write stamp) whose value the promoted replica
    never held: missing there, or older. (A row the DR site wrote anew since is not counted:
    its newer value wins the merge either way.)"""
    from meridian.conflicts import LOGICAL_BITS
    from meridian.feature_views import feature_views

    if open_store is None:
        raise FailoverError("failback of a promoted Redis replica needs the region's store (open_store)")
    cutoff = (int(since * 1000) + 1) << LOGICAL_BITS
    primary_store, replica_store = open_store(primary), link.open_replica(origin=dr_name)
    lost = 0
    try:
        for view in feature_views():
            before = [r for r in primary_store.iter_rows(view.name) if r.hlc <= cutoff]
            for start in range(0, len(before), 1_000):
                chunk = before[start : start + 1_000]
                held = replica_store.read_many(view.name, [r.entity for r in chunk], stamps=True)
                for row in chunk:
                    other = held.get(row.entity)
                    if other is None or (other.event_time_us, other.hlc, other.origin) < (
                        row.event_time_us,
                        row.hlc,
                        row.origin,
                    ):
                        lost += 1
    finally:
        primary_store.close()
        replica_store.close()
    return lost
