"""Real-time scoring: the Meridian service beside `mlflow models serve` and the in-process floor.

Setup (not timed): the main job for one region (`meridian run --regions eu-west`), which
fills the region's online store and registers a champion in the embedded MLflow registry.

Then, in one script, on the same model and the same transactions:
- `meridian`: `meridian serve` (the README's command; one uvicorn process) answering
  `POST /v1/eu-west/score`: validation, online feature lookup and fold, one-row predict,
  the push to the online store and the stream-log entry (all on, as shipped);
- `mlflow`: `mlflow models serve` on the champion version (MLflow's own scoring server,
  one uvicorn worker, its default, as Meridian's one process), sent the same rows with
  their features already computed (`dataframe_split`): the model alone, no feature lookup;
- `inprocess`: `serving.scoring.score_transaction` without HTTP (feature lookup + fold +
  one-row predict; push and stream log off), timed call by call;
- `meridian, scoring on threads`: the same server with `--scoring-threads 1`, scoring off
  the event loop on a thread: the design choice, measured (serving/app.py SCORING_THREADS).

Two kinds of load, each from another process on loopback:
- closed loop: `wrk` (Debian's package, installed here if missing), 8 connections on 2
  threads, each connection sending its next request when the last one is answered; the
  throughput and latency of a saturated server (wrk_bodies.lua rotates the bodies);
- open loop at 500 requests/s: requests are sent on a fixed schedule whether or not earlier
  ones have returned, over a pool of keep-alive connections, and latency is measured from
  each request's scheduled time, so a stall is charged to every request it delays (no
  coordinated omission); only the generator's own lateness in waking up (uvloop timers
  have 1 ms resolution) is not charged.

    python benchmarks/serving.py            # 53 days × 5,000 transactions; 20 s per phase
    python benchmarks/serving.py --quick    # smaller setup, 8 s per phase
    python benchmarks/serving.py --reuse    # keep the set-up data of the last run

The last line printed is one JSON object with the figures.

Why one script of ~540 lines: Meridian, its peer and the in-process floor are measured in
one run on the same model and rows (the house rule for a fair ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import meridian  # noqa: E402,F401  (sets OMP_WAIT_POLICY before lightgbm loads)

REGION = "eu-west"
WRK_SCRIPT = Path(__file__).with_name("wrk_bodies.lua")
CONNECTIONS = 8
# The targets (issue 18), printed beside the figures.
TARGET_RPS, TARGET_CLOSED_P99_MS, TARGET_RATIO = 2500, 5.0, 15.0
TARGET_OPEN_P99_MS, TARGET_INPROCESS_P99_MS = 2.0, 0.25


# ---------------------------------------------------------------- load generator (child process)


async def _drive(
    host: str, port: int, path: str, bodies: list[bytes], rate: float, seconds: float, pool: int
):
    """Open-loop load: request i is due at start + i / rate; latency counts from that moment."""
    connections: asyncio.Queue = asyncio.Queue()
    for _ in range(pool):
        connections.put_nowait(await asyncio.open_connection(host, port))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        # From the scheduled time, or from when this generator woke up to send it if its
        # own timer fired late (uvloop timers have 1 ms resolution): the generator's
        # lateness is not the server's. Waiting for a free connection always counts.
        due = max(start + i / rate, time.perf_counter())
        reader, writer = await connections.get()
        try:
            body = bodies[i % len(bodies)]
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append(time.perf_counter() - due)
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            reader, writer = await asyncio.open_connection(host, port)
        finally:
            connections.put_nowait((reader, writer))

    tasks = []
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "offered_rps": rate,
        "sent": total,
        "errors": errors,
        "elapsed_s": elapsed,
        "latencies": latencies,
    }


def drive_main(args: argparse.Namespace) -> None:
    import uvloop

    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines()]
    result = uvloop.run(_drive("127.0.0.1", args.port, args.path, bodies, args.rate, args.seconds, args.pool))
    print(json.dumps(result))


def drive(port: int, path: str, bodies_file: Path, rate: float, seconds: float, pool: int = 64) -> dict:
    """Run the load generator in a second process and summarise what it measured."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--drive",
            "--port",
            str(port),
            "--path",
            path,
            "--bodies",
            str(bodies_file),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--pool",
            str(pool),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds * 20 + 60,
    )
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    lat = sorted(raw.pop("latencies"))
    done = len(lat)
    return {
        **raw,
        "achieved_rps": round((done - raw["errors"]) / raw["elapsed_s"], 1),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "p999_ms": _pct(lat, 99.9),
    }


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))
    return round(sorted_values[index] * 1000, 3)


def ensure_wrk() -> str:
    """The path of `wrk`, installed from Debian's packages when missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("the closed-loop phase needs wrk: apt-get install wrk")
    print("installing wrk (Debian) …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def closed_loop(port: int, path: str, bodies: Path, seconds: float) -> dict:
    """wrk with CONNECTIONS connections on 2 threads for `seconds`: requests/s and latency."""
    out = subprocess.run(
        [
            ensure_wrk(),
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds:.0f}s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}{path}",
        ],
        env={**os.environ, "WRK_BODIES": str(bodies)},
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "connections": CONNECTIONS,
        "requests": raw["requests"],
        "errors": raw["socket_errors"] + raw["status_errors"],
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


# ---------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {seconds} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_meridian(home: Path, env: dict, scoring_threads: int | None = None) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "serve",
            "--regions",
            REGION,
            "--port",
            str(port),
            "--home",
            str(home),
            *(["--scoring-threads", str(scoring_threads)] if scoring_threads is not None else []),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
    return proc, port


def start_mlflow(version: int, env: dict) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow),
            "models",
            "serve",
            "-m",
            f"models:/fraud-{REGION}/{version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_ready(f"http://127.0.0.1:{port}/ping", proc)
    return proc, port


def _stop_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------- set-up and workload


def prepare(home: Path, days: int, rows: int, env: dict) -> None:
    cmd = [sys.executable, "-m", "cli", "run", "--regions", REGION, "--days", str(days)]
    cmd += ["--rows-per-day", str(rows), "--trials", "5", "--tuning-seconds", "60", "--score-days", "0"]
    cmd += ["--home", str(home)]
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def workload(home: Path, n: int) -> list[dict]:
    """`n` transactions of customers and merchants the region knows, in random order."""
    import duckdb

    from meridian.paths import region_paths
    from meridian.topology import load_topology

    region = load_topology().region(REGION)
    paths = region_paths(region, home)
    with duckdb.connect(str(paths.warehouse), read_only=True) as con:
        pairs = con.sql(
            "select customer_id, merchant_id from stg_transactions using sample 20000 rows"
        ).fetchall()
    rng = random.Random(11)
    return [
        {
            "transaction_id": f"bench-{i}",
            "customer_id": pairs[i % len(pairs)][0],
            "merchant_id": pairs[i % len(pairs)][1],
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
            "currency": rng.choice(region.currencies),
            "channel": rng.choice(["pos", "contactless", "ecom"]),
            "country": rng.choice(region.countries),
        }
        for i in range(n)
    ]


def inprocess(home: Path, txns: list[dict]) -> tuple[dict, list[list[float]], list[str]]:
    """The floor: the service's feature lookup + fold + one-row predict, no HTTP. Also returns
    the feature rows, so the MLflow server scores exactly the rows Meridian scored."""
    from datetime import UTC, datetime

    from meridian.online_store import to_micros
    from serving.main import build_app
    from serving.schemas import Transaction
    from serving.scoring import score_transaction

    app = build_app(poll_seconds=3600, regions=[REGION], stream_log=False, push=False)
    service = app.state.services[REGION]
    model = service.models.current
    rows, times = [], []
    for attempt in range(2):  # the first pass warms caches; the second is timed
        rows, times = [], []
        for body in txns:
            txn = Transaction(**body)
            started = time.perf_counter_ns()
            result = score_transaction(service, txn)
            times.append(time.perf_counter_ns() - started)
            if attempt:
                assert result["model_version"] == model.version
                # The same rows, for the MLflow server: the features as the service computed them.
                at = datetime.now(UTC)
                request = service.request_features(txn, at)
                values, _, _ = service.view_features(txn, request["amount_usd"], to_micros(at))
                values.update(request)
                rows.append([None if values[c] is None else float(values[c]) for c in model.columns])
    app.state.shutdown()
    times.sort()
    figures = {
        "calls": len(times),
        "p50_ms": round(times[len(times) // 2] / 1e6, 4),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))] / 1e6, 4),
        "p999_ms": round(times[int(0.999 * (len(times) - 1))] / 1e6, 4),
    }
    return figures, rows, model.columns


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="reuse the set-up data of the last run")
    parser.add_argument("--home", default=str(REPO_ROOT / "benchmarks" / ".work" / "serving"))
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive_main(args)
        return

    home = Path(args.home)
    bindir = str(Path(sys.executable).parent)  # mlflow models serve runs `uvicorn` from PATH
    env = {
        **os.environ,
        "MERIDIAN_HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    os.environ["MERIDIAN_HOME"] = str(home)
    from meridian.run_window import MIN_TRAINING_DAYS

    # The shortest window that trains a champion: the views' warm-up, three matured days, maturity.
    days, rows = (MIN_TRAINING_DAYS, 1500) if args.quick else (MIN_TRAINING_DAYS, 5000)
    if not (args.reuse and (home / "mlflow").exists()):
        shutil.rmtree(home, ignore_errors=True)
        print(f"set-up: main job for {REGION}, {days} days × {rows:,} transactions …", flush=True)
        prepare(home, days, rows, env)
    for stream in home.glob("regions/*/stream"):
        shutil.rmtree(stream)  # each run starts with an empty stream log

    from resources.mlflow import MlflowTrackingResource

    env["MLFLOW_TRACKING_URI"] = MlflowTrackingResource(home=str(home)).uri()
    txns = workload(home, 5000 if args.quick else 20000)
    floor, feature_rows, columns = inprocess(home, txns)
    print(f"in-process floor: p50 {floor['p50_ms']} ms  p99 {floor['p99_ms']} ms over {floor['calls']} calls")

    bodies = home / "bodies.jsonl"
    bodies.write_text("\n".join(json.dumps(t) for t in txns))
    mlflow_bodies = home / "mlflow-bodies.jsonl"
    mlflow_bodies.write_text(
        "\n".join(
            json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}) for row in feature_rows
        )
    )

    from meridian import registry

    client = MlflowTrackingResource(home=str(home)).client()
    version = registry.alias_version(client, registry.model_name(REGION), registry.CHAMPION)

    seconds = 8.0 if args.quick else 20.0
    path = f"/v1/{REGION}/score"
    load_before = os.getloadavg()

    # The design choice, measured: scoring on a thread off the event loop vs. on the loop
    # (the shipped default). Same process layout, same bodies, one after the other.
    proc, port = start_meridian(home, env, scoring_threads=1)
    try:
        closed_loop(port, path, bodies, 2)  # warm-up
        on_thread = closed_loop(port, path, bodies, seconds)
    finally:
        _stop(proc)
    _report("meridian, scoring on a thread, closed loop", on_thread)

    proc, port = start_meridian(home, env)
    try:
        closed_loop(port, path, bodies, 2)  # warm-up
        at500 = drive(port, path, bodies, 500, seconds)
        _report("meridian at 500/s, open loop", at500)
        closed = closed_loop(port, path, bodies, seconds)
        _report("meridian, closed loop", closed)
    finally:
        _stop(proc)

    proc, port = start_mlflow(version, env)
    try:
        closed_loop(port, "/invocations", mlflow_bodies, 2)  # warm-up
        mlflow = closed_loop(port, "/invocations", mlflow_bodies, seconds)
    finally:
        _stop_group(proc)
    _report("mlflow models serve, closed loop", mlflow)
    load_after = os.getloadavg()

    ratio = round(closed["rps"] / mlflow["rps"], 2) if mlflow["rps"] else float("inf")
    print()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {seconds:.0f} s per phase")
    print(f"{'':<40}{'rps':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}")
    for label, row in [
        (f"meridian, closed loop ({CONNECTIONS} conns)", closed),
        (f"mlflow models serve, closed ({CONNECTIONS} conns)", mlflow),
        ("meridian on a thread, closed loop", on_thread),
    ]:
        print(
            f"{label:<40}{row['rps']:>9}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['p999_ms']:>10}{row['errors']:>8}"
        )
    print(
        f"{'meridian, open loop at 500/s':<40}{at500['achieved_rps']:>9}{at500['p50_ms']:>9}"
        f"{at500['p99_ms']:>9}{at500['p999_ms']:>10}{at500['errors']:>8}"
    )
    print(
        f"{'in-process floor (no HTTP)':<40}{'':>9}{floor['p50_ms']:>9}{floor['p99_ms']:>9}{floor['p999_ms']:>10}"
    )
    checks = [
        ("closed-loop requests/s", closed["rps"], ">=", TARGET_RPS),
        ("closed-loop p99 ms", closed["p99_ms"], "<=", TARGET_CLOSED_P99_MS),
        ("× mlflow models serve (closed loop)", ratio, ">=", TARGET_RATIO),
        ("open-loop p99 ms at 500/s", at500["p99_ms"], "<=", TARGET_OPEN_P99_MS),
        ("in-process p99 ms", floor["p99_ms"], "<=", TARGET_INPROCESS_P99_MS),
    ]
    for name, value, op, target in checks:
        met = value >= target if op == ">=" else value <= target
        print(f"  {name:<38}{value:>10}  target {op} {target}  {'met' if met else 'NOT MET'}")
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "quick": args.quick,
                "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                "closed_loop": closed,
                "mlflow_closed_loop": mlflow,
                "on_thread_closed_loop": on_thread,
                "throughput_ratio_vs_mlflow": ratio,
                "open_loop_500": {k: v for k, v in at500.items()},
                "inprocess": floor,
            }
        )
    )


def _report(label: str, row: dict) -> None:
    rps = row.get("rps", row.get("achieved_rps"))
    print(
        f"  {label:<44} {rps:>8}/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
        f"p99.9 {row['p999_ms']:7.2f} ms  errors {row['errors']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
