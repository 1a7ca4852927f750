"""Replication throughput, incremental cost, and a failover drill (RTO and RPO), in one script.

1. Throughput. A regional lake of `--lake-gb` (default 1 GB; `--quick` 0.25 GB) of
   Parquet day partitions (4 tables x N days, random columns: nothing compresses away)
   copied to an empty replica by `meridian.replication` (read once: xxh3-128 checksum and
   write in the same pass, fsync per object, manifest published atomically), beside a
   plain copy of the same files on the same disk (`shutil.copyfile`, then fsync per file:
   the same durability). Each is the best of `--repeat` rounds, alternating, in this one
   process; the page cache holds the source for both. The plain copy without fsync is
   printed too, for reference.
2. Incremental. One new day (4 files) lands; the replica is brought up to date. Then a
   run with nothing new. Both beside the full copy: the time follows the change.
3. Failover drill. One region through the real pipeline and training (Dagster), replica
   assets, the scoring service on loopback. A day lands after the last replication (the
   RPO), the region's storage disappears; a watcher evaluates the real health sensor
   every `--probe-interval` seconds, runs the failover job it requests, and the drill
   measures the time from the fault to the first answer from the DR region (RTO).
   Failback reports what the replicas had missed (RPO, in partitions). Then the same fault
   with the platform as shipped: `dagster-daemon`, `meridian health-loop` (1 s probes; it
   launches the failover run) and the service with its default poll: the RTO users get.
   Then the online store on Redis as in production: the region's Redis SIGKILLed, the
   service answering from its promoted live replica in the DR region, with the same
   platform as shipped; failback merges and re-attaches the replica.

    python benchmarks/replication.py            # 1 GB lake
    python benchmarks/replication.py --quick    # 0.25 GB lake, smaller region

The last line printed is one JSON object with the figures.

Why one script of ~500 lines: every figure it compares is measured in this one process and
run (the house rule for a fair ratio), so the three phases and their set-up live together.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TABLES = ("raw_transactions", "raw_labels", "predictions", "quarantined_transactions")
WEIGHTS = (0.70, 0.05, 0.20, 0.05)


def build_lake(root: Path, gb: float, days: int) -> int:
    """Parquet day partitions of random data totalling about `gb`."""
    rng = np.random.default_rng(7)
    per_day = gb * 1e9 / days
    total = 0
    for d in range(days):
        for table, weight in zip(TABLES, WEIGHTS, strict=True):
            rows = max(1000, int(per_day * weight / 40))  # ~40 bytes per row, uncompressible
            frame = pl.DataFrame(
                {
                    "id": rng.integers(0, 2**62, rows),
                    "amount": rng.random(rows),
                    "score": rng.random(rows),
                    "merchant": rng.integers(0, 2**62, rows),
                    "t": rng.integers(0, 2**62, rows),
                }
            )
            path = root / "lake" / table / f"day=2026-{1 + d // 28:02d}-{1 + d % 28:02d}" / "data.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(path, compression="zstd")
            total += path.stat().st_size
    return total


def plain_copy(src: Path, dst: Path, fsync: bool) -> float:
    shutil.rmtree(dst, ignore_errors=True)
    started = time.perf_counter()
    for path in sorted(src.rglob("*.parquet")):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return time.perf_counter() - started


def replicate_fresh(src: Path, dst: Path, durable: bool = True):
    from meridian.replication import Replica, walk

    shutil.rmtree(dst, ignore_errors=True)
    started = time.perf_counter()
    result = Replica(dst).replicate(walk(src, ["lake"]), durable=durable)
    return time.perf_counter() - started, result


def throughput(work: Path, gb: float, days: int, repeat: int) -> dict:
    src = work / "source"
    size = build_lake(src, gb, days)
    files = len(list(src.rglob("*.parquet")))
    print(f"lake: {size / 1e9:.2f} GB in {files} files ({days} days x {len(TABLES)} tables)", flush=True)
    plain, plain_nosync, ours, ours_nosync = [], [], [], []
    for _ in range(repeat):
        os.sync()
        plain.append(plain_copy(src, work / "plain", fsync=True))
        os.sync()
        seconds, result = replicate_fresh(src, work / "replica")
        ours.append(seconds)
        os.sync()
        plain_nosync.append(plain_copy(src, work / "plain", fsync=False))
        os.sync()
        ours_nosync.append(replicate_fresh(src, work / "replica-nosync", durable=False)[0])
    assert result.copied_bytes == size and result.files == files
    shutil.rmtree(work / "replica-nosync", ignore_errors=True)
    best_plain, best_ours, best_nosync = min(plain), min(ours), min(plain_nosync)
    best_ours_nosync = min(ours_nosync)
    print(f"\nFull copy of the lake (best of {repeat})")
    print(f"  {'':44} {'seconds':>8} {'MB/s':>8}")
    print(f"  {'plain copy + fsync per file (baseline)':44} {best_plain:8.2f} {size / 1e6 / best_plain:8.0f}")
    print(
        f"  {'meridian replication (checksummed, atomic)':44} {best_ours:8.2f} {size / 1e6 / best_ours:8.0f}"
    )
    print(f"  {'plain copy, no fsync':44} {best_nosync:8.2f} {size / 1e6 / best_nosync:8.0f}")
    print(
        f"  {'meridian replication, no fsync':44} {best_ours_nosync:8.2f} {size / 1e6 / best_ours_nosync:8.0f}"
    )
    fraction = best_plain / best_ours
    fraction_nosync = best_nosync / best_ours_nosync
    print(f"  fraction of plain-copy throughput, both durable: {fraction:.2f} (target >= 0.8)")
    print(f"  fraction of plain-copy throughput, neither fsyncs: {fraction_nosync:.2f}", flush=True)

    # Incremental: one new day of the four tables.
    from meridian.replication import Replica, walk

    rep = Replica(work / "replica")
    rng = np.random.default_rng(11)
    new_bytes = 0
    per_day = gb * 1e9 / days
    for table, weight in zip(TABLES, WEIGHTS, strict=True):
        rows = max(1000, int(per_day * weight / 40))
        path = src / "lake" / table / "day=2026-12-31" / "data.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"id": rng.integers(0, 2**62, rows), "amount": rng.random(rows)}).write_parquet(path)
        new_bytes += path.stat().st_size
    started = time.perf_counter()
    inc = rep.replicate(walk(src, ["lake"]))
    incremental = time.perf_counter() - started
    started = time.perf_counter()
    idle = rep.replicate(walk(src, ["lake"]))
    nothing = time.perf_counter() - started
    assert inc.copied_files == len(TABLES) and idle.copied_files == 0 and not idle.published
    print("\nIncremental replication")
    print(
        f"  one new day ({len(TABLES)} files, {new_bytes / 1e6:.1f} MB): {incremental:.3f} s "
        f"({inc.copied_files} copied, {inc.unchanged_files} unchanged by stat)"
    )
    print(
        f"  nothing new: {nothing:.3f} s;  full copy: {best_ours:.2f} s;  "
        f"change / lake = {new_bytes / size:.3f}, time / full = {incremental / best_ours:.3f}",
        flush=True,
    )
    shutil.rmtree(work / "plain", ignore_errors=True)
    return {
        "lake_gb": round(size / 1e9, 3),
        "files": files,
        "plain_copy_fsync_s": round(best_plain, 3),
        "replication_s": round(best_ours, 3),
        "plain_copy_nofsync_s": round(best_nosync, 3),
        "plain_mb_s": round(size / 1e6 / best_plain, 1),
        "replication_mb_s": round(size / 1e6 / best_ours, 1),
        "fraction_of_plain_copy": round(fraction, 3),
        "fraction_of_plain_copy_nofsync": round(fraction_nosync, 3),
        "replication_nofsync_s": round(best_ours_nosync, 3),
        "incremental_s": round(incremental, 4),
        "incremental_bytes": new_bytes,
        "noop_s": round(nothing, 4),
        "incremental_fraction_of_full": round(incremental / best_ours, 4),
        "change_fraction_of_lake": round(new_bytes / size, 4),
        "plain_copy_rounds_s": [round(x, 3) for x in plain],
        "replication_rounds_s": [round(x, 3) for x in ours],
    }


# ---------------------------------------------------------------- failover drill

REGION, DR_REGION = "eu-west", "eu-central"


def _call(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def drill(home: Path, rows_per_day: int, probe_interval: float) -> dict:
    import dagster as dg
    import duckdb
    import uvicorn

    from meridian.run_tags import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG

    os.environ["MERIDIAN_HOME"] = str(home)
    from datetime import date, timedelta

    from assets.definitions_file import load_definitions_module
    from assets.failover import FAILOVER_TAG, region_failover, region_health_sensor
    from assets.features import feature_view_assets
    from assets.ingestion import labels_ingestion, transactions_ingestion
    from assets.online import online_features
    from assets.promotion import fraud_model_promotion
    from assets.replication import REPLICA_ASSETS
    from assets.serving import deployment_config
    from assets.training import fraud_model, fraud_model_hyperparameters, training_set
    from assets.transforms import regional_dbt_models
    from meridian.lake import partition_file
    from meridian.paths import region_paths
    from meridian.run_window import LABEL_MATURITY_DAYS, warmup_days
    from meridian.topology import load_topology
    from resources.alerting import AlertingResource
    from resources.lake import RegionalLakeResource
    from resources.mlflow import MlflowTrackingResource
    from resources.source import TransactionSourceResource
    from serving.main import build_app

    # The views' warm-up (rows before it are never trained on), 4 trainable days, their maturity.
    n_days = warmup_days() + 4 + LABEL_MATURITY_DAYS
    days = [(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(n_days)]
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": TransactionSourceResource(rows_per_day=rows_per_day, malformed_rate=0.0),
        "mlflow_tracking": MlflowTrackingResource(home=str(home)),
        "alerting": AlertingResource(path=str(home / "alerts" / "alerts.jsonl")),
    }
    print(
        f"\nFailover drill: setting up {REGION} ({len(days)} days x {rows_per_day} rows, trained model)",
        flush=True,
    )
    key = lambda day: str(dg.MultiPartitionKey({"region": REGION, "day": day}))  # noqa: E731
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    setup_log = open(home.parent / "drill-setup.log", "w")  # noqa: SIM115 - dbt's and MLflow's chatter
    redirect = contextlib.ExitStack()
    redirect.enter_context(contextlib.redirect_stdout(setup_log))
    redirect.enter_context(contextlib.redirect_stderr(setup_log))
    try:  # a failed set-up step must show on the terminal, not only in the log
        assert dg.materialize(
            [
                transactions_ingestion,
                labels_ingestion,
                regional_dbt_models,
                feature_view_assets,
                online_features,
            ],
            resources=resources,
            tags={
                PARTITION_RANGE_START_TAG: key(days[0]),
                PARTITION_RANGE_END_TAG: key(days[-1]),
            },
            run_config=quiet,
        ).success
        assert dg.materialize(
            [
                training_set,
                fraud_model_hyperparameters,
                fraud_model,
                fraud_model_promotion,
                deployment_config,
            ],
            resources=resources,
            partition_key=REGION,
            run_config={
                "ops": {"fraud_model_hyperparameters": {"config": {"n_trials": 2, "max_rounds": 60}}},
                **quiet,
            },
        ).success
        replicated = dg.materialize(
            REPLICA_ASSETS, resources=resources, partition_key=REGION, run_config=quiet
        )
        assert replicated.success
    finally:
        redirect.close()
    topology = load_topology()
    primary = region_paths(topology.region(REGION), home)
    with duckdb.connect(str(primary.warehouse), read_only=True) as con:
        customer, merchant = con.sql(
            f"select customer_id, merchant_id from stg_transactions where event_day = '{days[-1]}' limit 1"
        ).fetchall()[0]
    txn = {
        "transaction_id": "d-1",
        "customer_id": customer,
        "merchant_id": merchant,
        "amount": 25.0,
        "currency": "EUR",
        "channel": "ecom",
        "country": "IE",
        "event_time": f"{days[-1]}T23:00:00Z",
    }
    app = build_app(poll_seconds=0.25, regions=[REGION])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/{REGION}/score"
    try:
        assert _call(url, txn)[1]["site"] == REGION
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, resources=resources)
            assert list(region_health_sensor(context) or []) == []
            cursor = context.cursor
            # Data that lands after the last replication: what a loss of the site would lose.
            after = (date.fromisoformat(days[-1]) + timedelta(days=1)).isoformat()  # a day past the replica
            late = partition_file(primary.table("raw_transactions"), after)
            late.parent.mkdir(parents=True)
            shutil.copyfile(partition_file(primary.table("raw_transactions"), days[-1]), late)
            time.sleep(0.05)
            lost = primary.root.with_name(f"{REGION}.lost")
            fault = time.monotonic()
            os.rename(primary.root, lost)
            requests = []
            while not requests:  # the watcher: the real sensor, every probe_interval
                time.sleep(probe_interval)
                context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
                requests = [
                    r for r in (region_health_sensor(context) or []) if r.tags.get(FAILOVER_TAG) == REGION
                ]
                cursor = context.cursor
            detected = time.monotonic()
            run = region_failover.execute_in_process(
                run_config={**requests[0].run_config, **quiet}, instance=instance, resources=resources
            )
            assert run.success
            failed_over = time.monotonic()
            while True:
                status, body = _call(url, txn)
                if status == 200:
                    break
                time.sleep(0.02)
            serving = time.monotonic()
            assert body["site"] == DR_REGION
            os.rename(lost, primary.root)
            back = region_failover.execute_in_process(
                run_config={
                    "ops": {
                        "region_failover_op": {
                            "config": {"region": REGION, "action": "failback", "drain_seconds": 1.0}
                        }
                    },
                    **quiet,
                },
                instance=instance,
                resources=resources,
            )
            assert back.success
            report = back.output_for_node("region_failover_op")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.shutdown()
    rto = serving - fault
    print(
        f"  fault → detected (sensor, {probe_interval:.1f} s interval, "
        f"{topology.failover.probe_failures} failed probes): {detected - fault:.2f} s"
    )
    print(f"  detected → failover job done:   {failed_over - detected:.2f} s")
    print(f"  failover → first DR answer:     {serving - failed_over:.2f} s (service poll 0.25 s)")
    print(f"  serving RTO (fault → DR answers): {rto:.2f} s (target < 10 s)")
    print(
        f"  RPO: {report['rpo_partitions']} partition(s) not replicated at the fault: {report['rpo_files']}"
    )
    print(f"  failback reconciled: {report['reconciled']}", flush=True)
    daemon_rto = daemon_drill(home, txn)
    redis_figures = redis_daemon_drill(home, txn)
    print(
        f"  serving RTO with dagster-daemon and `meridian health-loop` as shipped "
        f"(1 s probes, the service's own poll): {daemon_rto:.2f} s (target < 10 s; beside "
        f"{rto:.2f} s with the sensor evaluated every {probe_interval:.1f} s above)",
        flush=True,
    )
    return {
        **redis_figures,
        "daemon_loop_rto_s": round(daemon_rto, 3),
        "serving_rto_s": round(rto, 3),
        "detection_s": round(detected - fault, 3),
        "failover_job_s": round(failed_over - detected, 3),
        "switch_s": round(serving - failed_over, 3),
        "rpo_partitions": report["rpo_partitions"],
        "rpo_files": report["rpo_files"],
        "probe_interval_s": probe_interval,
    }


def daemon_drill(home: Path, txn: dict) -> float:
    """The same fault with the platform running as shipped: `dagster-daemon`, `meridian
    health-loop` (which launches the failover run on the instance) and the service with its
    default poll. Seconds from the fault to the first answer from the DR site."""
    from meridian import dr
    from meridian.dr import health
    from meridian.paths import region_paths
    from meridian.topology import load_topology
    from serving.main import build_app
    from tests.daemon import shipped_local_env, start_daemon, start_health_loop, stop_daemon, stop_health_loop
    from tests.helpers import serving

    topology = load_topology()
    primary = region_paths(topology.region(REGION), home)
    env = shipped_local_env(home)
    logs = home.parent
    daemon, daemon_log = start_daemon(env, logs / "daemon.log")
    loop, loop_log = start_health_loop(env, home, logs / "health-loop.log")
    lost = primary.root.with_name(f"{REGION}.lost")
    try:
        with serving(build_app(regions=[REGION])) as base:  # the shipped poll interval
            url = f"{base}/v1/{REGION}/score"
            deadline = time.monotonic() + 240
            while not (
                health.loop_alive(home)
                and REGION in health.load(home)["tracker"]["seen_up"]
                and "region_health_sensor" in (logs / "daemon.log").read_text()
            ):
                if time.monotonic() > deadline or loop.poll() is not None:
                    raise RuntimeError("the daemon or the health loop did not start: see " + str(logs))
                time.sleep(0.2)
            assert _call(url, {**txn, "transaction_id": "d-2"})[1]["site"] == REGION
            fault = time.monotonic()
            os.rename(primary.root, lost)
            while True:
                status, body = _call(url, {**txn, "transaction_id": "d-3"})
                if status == 200 and body["site"] == DR_REGION:
                    break
                if time.monotonic() - fault > 120:
                    raise RuntimeError(f"no answer from {DR_REGION} within 120 s: {body}; see {logs}")
                time.sleep(0.05)
            return time.monotonic() - fault
    finally:
        stop_health_loop(loop, loop_log)
        stop_daemon(daemon, daemon_log)
        if lost.exists():
            os.rename(lost, primary.root)
        if dr.is_failed_over(home, REGION):
            dr.fail_back(topology, home, REGION, drain_seconds=0)


def redis_daemon_drill(home: Path, txn: dict) -> dict:
    """The online store on Redis as in production: the region's own Redis (durable) and a live
    replica of it in the DR region (REPLICAOF). With the platform as shipped (dagster-daemon,
    `meridian health-loop`, the service's own poll), the region's Redis is SIGKILLed: seconds
    from the kill to the first answer from the DR site, served from the promoted replica.
    Then the Redis returns, failback merges and re-attaches the replica."""
    from meridian import dr
    from meridian.dr import health
    from meridian.paths import region_paths
    from meridian.redis_replication import RedisReplicaLink, wait_in_sync
    from meridian.settings import region_env_suffix
    from meridian.topology import load_topology
    from resources.online_store import OnlineStoreResource
    from serving.main import build_app
    from tests.daemon import shipped_local_env, start_daemon, start_health_loop, stop_daemon, stop_health_loop
    from tests.helpers import serving
    from tests.servers import RedisServer

    topology = load_topology()
    primary_paths = region_paths(topology.region(REGION), home)
    logs = home.parent
    primary = RedisServer(logs / "redis-primary", durable=True).start()
    replica = RedisServer(logs / "redis-replica").start()
    link = RedisReplicaLink(REGION, primary.url, replica.url)
    shared = RedisServer(logs / "redis-other-regions").start()  # the regions this drill does not serve
    redis_env = {
        "MERIDIAN_ONLINE_STORE": "redis",
        "MERIDIAN_REDIS_URL": shared.url,
        f"MERIDIAN_REDIS_URL_{region_env_suffix(REGION)}": primary.url,
        f"MERIDIAN_REDIS_REPLICA_URL_{region_env_suffix(REGION)}": replica.url,
    }
    rows = primary.load_online_rows(primary_paths.root, REGION)
    link.attach()
    synced = wait_in_sync(primary.url, replica.url, REGION)
    print(
        f"  Redis replica in sync: {rows:,} rows, offset lag {synced.offset_lag_bytes} bytes, "
        f"a fresh write reached it in {synced.lag_seconds * 1000:.1f} ms",
        flush=True,
    )
    env = {**shipped_local_env(home), **redis_env}
    daemon, daemon_log = start_daemon(env, logs / "daemon-redis.log")
    loop, loop_log = start_health_loop(env, home, logs / "health-loop-redis.log")
    saved = {k: os.environ.get(k) for k in redis_env}
    os.environ.update(redis_env)
    try:
        with serving(build_app(regions=[REGION])) as base:  # the shipped poll interval
            url = f"{base}/v1/{REGION}/score"
            deadline = time.monotonic() + 240
            while not (health.loop_alive(home) and REGION in health.load(home)["tracker"]["seen_up"]):
                if time.monotonic() > deadline or loop.poll() is not None:
                    raise RuntimeError("the daemon or the health loop did not start: see " + str(logs))
                time.sleep(0.2)
            assert _call(url, {**txn, "transaction_id": "r-1"})[1]["site"] == REGION
            fault = time.monotonic()
            primary.kill()
            while True:
                status, body = _call(url, {**txn, "transaction_id": "r-2"})
                if status == 200 and body["site"] == DR_REGION:
                    break
                if time.monotonic() - fault > 120:
                    raise RuntimeError(f"no answer from {DR_REGION} within 120 s: {body}; see {logs}")
                time.sleep(0.05)
            rto = time.monotonic() - fault
        stop_health_loop(loop, loop_log)
        stop_daemon(daemon, daemon_log)
        primary.start()
        resource = OnlineStoreResource(
            backend="redis",
            redis_url=shared.url,
            redis_urls={REGION: primary.url},
            replica_urls={REGION: replica.url},
        )
        report = dr.fail_back(
            topology, home, REGION, open_store=resource.open, drain_seconds=0, online_replica=link
        )
        wait_in_sync(primary.url, replica.url, REGION)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if loop.poll() is None:
            stop_health_loop(loop, loop_log)
        if daemon.poll() is None:
            stop_daemon(daemon, daemon_log)
        for server in (primary, replica, shared):
            server.close()
    print(
        f"  Redis primary SIGKILLed → first answer from the promoted replica at {DR_REGION}, "
        f"with dagster-daemon and `meridian health-loop` as shipped: {rto:.2f} s (target < 10 s)"
    )
    print(
        f"  failback: {report.rpo_online_rows} online row(s) the replica had not received, "
        f"{report.reconciled['online_rows']} merged back, replica re-attached: "
        f"{(report.online_replica or {}).get('reattached')}",
        flush=True,
    )
    return {
        "redis_daemon_loop_rto_s": round(rto, 3),
        "redis_rpo_online_rows": report.rpo_online_rows,
        "redis_replica_lag_ms": round(synced.lag_seconds * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lake-gb", type=float)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--probe-interval", type=float, default=1.0)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    gb = args.lake_gb or (0.25 if args.quick else 1.0)
    days = 30 if args.quick else 60
    work = args.work or Path(tempfile.mkdtemp(prefix="meridian-replication-"))
    try:
        figures = throughput(work / "throughput", gb, days, args.repeat)
        shutil.rmtree(work / "throughput", ignore_errors=True)
        figures |= drill(work / "drill", 600 if args.quick else 1500, args.probe_interval)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    figures["quick"] = args.quick
    figures["median_replication_s"] = statistics.median(figures["replication_rounds_s"])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
