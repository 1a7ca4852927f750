"""Lake replication between two regions' object stores: Delta replication against a plain copy.

Two S3-compatible servers on loopback (moto, one process each, IAM on: each region its own
credentials), as in the tests. A Delta table of `--days` day partitions of random data
(nothing compresses away) is written into the source region's bucket through
meridian.lake_tables. Then, alternating, `--repeat` rounds of:

- **plain copy**: every object under the table's prefix (data files and log) read from the
  source and written to a fresh prefix of the target, boto3, `THREADS` threads;
- **Meridian**: `meridian.lake_replication.replicate_table` into another fresh prefix of the
  target: the log read, the files it references copied with the same client and threads
  (MD5 checked against the source ETag, CRC32 sent for the target to check, xxh3 computed
  and stored; the plain copy's writes carry botocore's CRC32 too), then
  the log entries in order.

The best round of each is compared (throughput in MB/s of data moved). Then the incremental
cost: one day replaced at the source (one commit), replicated; then a run with nothing new.
Both beside the full copy: the cost follows what changed.

    python benchmarks/lake_replication.py            # 60 days x 12 MB
    python benchmarks/lake_replication.py --quick    # 20 days x 4 MB

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from meridian.governance import default_policy  # noqa: E402
from meridian.lake_replication import THREADS, replicate_table  # noqa: E402
from meridian.lake_tables import LakeLocation  # noqa: E402
from meridian.object_store import S3Location, list_objects  # noqa: E402
from meridian.topology import load_topology  # noqa: E402
from tests.object_stores import start_region_store  # noqa: E402

FIRST_DAY = date(2026, 1, 1)
TABLE = "raw_transactions"


def _frame(rng: np.random.Generator, mb: float) -> pl.DataFrame:
    rows = int(mb * 1e6 / 32)  # 4 random 8-byte columns: ~32 bytes a row after compression
    return pl.DataFrame({c: rng.integers(0, 2**62, rows) for c in ("id", "amount", "merchant", "t")})


def _location(store, prefix: str) -> S3Location:
    return S3Location(
        store.region, store.bucket, prefix, store.endpoint, store.access_key_id, store.secret_access_key
    )


def plain_copy(source: S3Location, target: S3Location, under: str) -> tuple[int, int]:
    """Every object under `under`, read and written with one client per side and THREADS threads."""
    src, dst = source.client(), target.client()
    objects = list(list_objects(source, src, under))

    def copy(key: str) -> int:
        body = src.get_object(Bucket=source.bucket, Key=source.key(key))["Body"].read()
        dst.put_object(Bucket=target.bucket, Key=target.key(key), Body=body)
        return len(body)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return len(objects), sum(pool.map(copy, [o.key for o in objects]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--mb-per-day", type=float, default=12.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.days, args.mb_per_day, args.repeat = 20, 4.0, 2
    topology, policy = load_topology(), default_policy()
    workdir = Path(tempfile.mkdtemp(prefix="lake-replication-"))
    stores = {r: start_region_store(r, workdir) for r in ("eu-west", "eu-central")}
    try:
        source = _location(stores["eu-west"], "lake")
        table = LakeLocation.on_object_store(source).table(TABLE)
        rng = np.random.default_rng(7)
        for offset in range(args.days):
            table.replace(
                _frame(rng, args.mb_per_day), day=FIRST_DAY + timedelta(days=offset), origin="source"
            )
        objects = list(list_objects(source, source.client(), f"{TABLE}/"))
        total_mb = sum(o.size for o in objects) / 1e6
        print(
            f"source: {len(objects)} objects, {total_mb:.1f} MB ({args.days} days, {len(objects) - args.days} log entries)"
        )

        plain, ours = [], []
        for round_ in range(args.repeat):
            started = time.perf_counter()
            files, moved = plain_copy(source, _location(stores["eu-central"], f"plain-{round_}"), f"{TABLE}/")
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = replicate_table(
                source, _location(stores["eu-central"], f"delta-{round_}"), TABLE, topology, policy
            )
            ours.append(time.perf_counter() - started)
            print(
                f"round {round_ + 1}: plain copy {plain[-1]:.2f} s ({files} objects, {moved / 1e6:.1f} MB); "
                f"Meridian {ours[-1]:.2f} s ({result.data_files_copied} files + {result.log_entries_copied} log entries, "
                f"{result.bytes_copied / 1e6:.1f} MB)"
            )
        plain_mb_s, ours_mb_s = total_mb / min(plain), total_mb / min(ours)

        replica = _location(stores["eu-central"], "delta-0")
        table.replace(
            _frame(rng, args.mb_per_day), day=FIRST_DAY, origin="source"
        )  # one day changes: one commit
        incremental = replicate_table(source, replica, TABLE, topology, policy)
        nothing = replicate_table(source, replica, TABLE, topology, policy)
        same = (
            LakeLocation.on_object_store(replica)
            .table(TABLE)
            .read()
            .sort("id")
            .equals(table.read().sort("id"))
        )
        load = os.getloadavg()
        figures = {
            "objects": len(objects),
            "mb": round(total_mb, 1),
            "plain_copy_s": round(min(plain), 3),
            "meridian_s": round(min(ours), 3),
            "plain_copy_mb_s": round(plain_mb_s, 1),
            "meridian_mb_s": round(ours_mb_s, 1),
            "ratio": round(ours_mb_s / plain_mb_s, 3),
            "incremental_s": round(incremental.seconds, 3),
            "incremental_mb": round(incremental.bytes_copied / 1e6, 2),
            "incremental_files": incremental.data_files_copied,
            "incremental_log_entries": incremental.log_entries_copied,
            "nothing_new_s": round(nothing.seconds, 3),
            "replica_equals_source": same,
            "threads": THREADS,
            "load_avg_1m": round(load[0], 2),
        }
        print(
            f"\nfull copy, best of {args.repeat}: plain {figures['plain_copy_mb_s']} MB/s, Meridian "
            f"{figures['meridian_mb_s']} MB/s: {figures['ratio']} of the plain copy's throughput (target >= 0.8)"
        )
        print(
            f"incremental (1 of {args.days} days changed): {figures['incremental_s']} s, "
            f"{figures['incremental_mb']} MB, {figures['incremental_files']} file + {figures['incremental_log_entries']} "
            f"log entry, against {figures['meridian_s']} s for the full copy; nothing new: {figures['nothing_new_s']} s"
        )
        print(f"replica reads the same rows as the source: {same}; load average {load[0]:.2f}")
        print(json.dumps(figures))
    finally:
        for store in stores.values():
            store.process.terminate()


if __name__ == "__main__":
    main()
