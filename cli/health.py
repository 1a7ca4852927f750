"""`meridian health-loop`: probe every active region at the RTO's cadence and fail over.

The health sensor runs when the daemon ticks it (5 s at best, and every failed probe costs a
tick); a fault-to-failover of under 10 s needs probes every second. This loop probes each
region every `--interval` seconds with the sensor's rule (meridian.dr.health), and when a
failover is due (failover.mode automated) runs the `region_failover` job in this process on
the persistent instance: the run shows in the UI like the sensor's, without waiting for the
queue or a run worker to start. While it runs, the sensor stands aside (the loop's heartbeat
in `$MERIDIAN_HOME/platform/health_loop.json`); if it stops, the sensor takes over.

Run it beside dagster-daemon (the Helm chart's `health` deployment; locally
`meridian health-loop &`). It writes nothing into any region's storage but the heartbeat
file the probe writes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from assets.definitions_file import load_definitions_module
from cli.runs import prepare_environment, quiet_libraries


def run_loop(interval: float, max_seconds: float | None = None) -> int:
    from dagster import DagsterInstance

    from assets.failover import FAILOVER_TAG, failed_runs_since, failover_run_config
    from meridian import dr
    from meridian.dr import health
    from meridian.settings import settings

    module = load_definitions_module()
    resources = module.build_resources(settings().profile)
    topology = resources["topology"].load()
    home = resources["lake"].root()
    open_store = resources["online_store"].open
    alerting = resources["alerting"]
    job = module.defs.resolve_job_def("region_failover")
    tracker = health.HealthTracker(topology.failover, health.load(home).get("tracker"))
    stop = []
    attempted: set[str] = set()

    def on_sigterm(*_) -> None:
        stop.append(True)

    signal.signal(signal.SIGTERM, on_sigterm)
    started = time.monotonic()
    print(
        f"meridian health-loop: probing {', '.join(topology.active_region_names)} every {interval} s",
        flush=True,
    )
    with DagsterInstance.get() as instance:
        while not stop and (max_seconds is None or time.monotonic() - started < max_seconds):
            tick = time.monotonic()
            probed = [r for r in topology.active_region_names if not dr.is_failed_over(home, r)]
            for region in sorted(set(topology.active_region_names) - set(probed)):
                tracker.failed_over(region)
            probes = dr.probe_all(topology, home, probed, open_store)
            for region in probed:
                result = probes[region]
                verdict = tracker.observe(
                    home,
                    region,
                    result.problems,
                    lambda since, r=region: failed_runs_since(instance, r, since),
                )
                if not verdict.due:
                    continue
                alerting.send(
                    "ERROR",
                    region,
                    "health_loop",
                    f"region-down:{verdict.outage_id}",
                    f"{region} is down: {verdict.reason}",
                )
                if topology.failover.mode != "automated":
                    continue
                # The op takes the region's failover lock: a sensor's run or an operator's
                # that comes second finds the region failed over and stops.
                if verdict.outage_id in attempted:
                    continue  # one failover run per outage, as the sensor's run key
                attempted.add(verdict.outage_id)
                print(f"{region}: failing over ({verdict.reason})", flush=True)
                outcome = job.execute_in_process(
                    instance=instance,
                    run_config=failover_run_config(region, verdict.reason),
                    tags={
                        FAILOVER_TAG: region,
                        "meridian/triggered_by": "health_loop",
                        "meridian/outage": verdict.outage_id,
                    },
                    raise_on_error=False,
                )
                print(f"{region}: failover run {outcome.run_id} success={outcome.success}", flush=True)
                # Dagster's run set SIGTERM to raise KeyboardInterrupt: stop between ticks again.
                signal.signal(signal.SIGTERM, on_sigterm)
            health.save(home, tracker, loop_interval=interval)
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    return 0


def operations_warnings(home: Path, instance, now: float | None = None) -> list[str]:
    """What does not happen while the service runs, because nothing drives it: printed by
    `meridian serve` when it starts. The service scores and logs on its own; the stream's
    micro-batches, deployment analysis and failover need the daemon (and the health loop)."""
    from meridian.dr import health

    now = time.time() if now is None else now
    warnings = []
    beats = instance.get_daemon_heartbeats()
    sensor_beat = beats.get("SENSOR")
    if sensor_beat is None or now - sensor_beat.timestamp > 120:
        warnings.append(
            "no dagster-daemon is ticking sensors on this instance: what the service logs is not "
            "micro-batched into the lake, canary and A/B deployments are not analysed, and failover "
            "is not automatic. Start `dagster dev -w workspace.yaml` (or `dagster-daemon run -w workspace.yaml`)."
        )
    if health.loop_alive(home, now) is None:
        warnings.append(
            "no `meridian health-loop` is running: a region's outage waits for the health sensor's "
            "ticks and a queued run (tens of seconds) instead of about 4 s. Start `meridian health-loop`."
        )
    return warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="meridian health-loop")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between probes of every region")
    parser.add_argument("--max-seconds", type=float, help="stop after this long (drills, tests)")
    parser.add_argument("--home", help="data root (default $MERIDIAN_HOME or .meridian/)")
    args = parser.parse_args(argv)
    prepare_environment(Path(args.home) if args.home else None)
    quiet_libraries()
    return run_loop(args.interval, args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
