"""Failover: `region_failover` (an op job; Launchpad config or `meridian failover`) promotes
the DR region for a region, or fails it back. `region_health_sensor` probes every active
region (storage root, heartbeat, online store, failed runs) and, with `failover.mode:
automated`, launches the failover itself after consecutive failed probes.
"""

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Literal

import dagster as dg
from pydantic import Field

from meridian import dr
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.online_store import OnlineStoreResource
from resources.topology import RegionTopologyResource


class FailoverConfig(dg.Config):
    region: str = Field(description="the active region to fail over or back")
    action: Literal["failover", "failback"] = Field(default="failover")
    reason: str = Field(default="manual failover from the Launchpad", description="recorded with the state")
    drain_seconds: float = Field(
        default=5.0,
        description="failback: wait this long after switching back before merging what the DR site "
        "wrote (longer than the scoring service's poll interval)",
    )


@dg.op(
    description="Promote the DR region of `region` (failover), or return `region` to its own site (failback)."
)
def region_failover_op(
    context: dg.OpExecutionContext,
    config: FailoverConfig,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    online_store: OnlineStoreResource,
    alerting: AlertingResource,
) -> dict:
    topo = topology.load()
    if config.region not in topo.active_region_names:
        raise dg.Failure(f"unknown or standby region {config.region!r}; active: {topo.active_region_names}")
    home = lake.root()
    by = context.run.tags.get("meridian/triggered_by", "manual")
    try:
        if config.action == "failover":
            report = dr.fail_over(topo, home, config.region, config.reason, by=by)
        else:
            report = dr.fail_back(
                topo, home, config.region, open_store=online_store.open, drain_seconds=config.drain_seconds
            )
    except dr.FailoverError as error:
        raise dg.Failure(str(error)) from error
    summary = report.as_dict()
    alerting.send(
        "WARN" if config.action == "failback" else "ERROR",
        config.region,
        "region_failover",
        f"{config.action}:{config.region}:{context.run_id}",
        f"{config.region} {config.action}: now served from {report.serving_region} ({config.reason})",
        {
            k: v
            for k, v in summary.items()
            if k in ("replica_versions", "rpo_seconds", "rpo_partitions", "reconciled")
        },
    )
    context.add_output_metadata(
        {
            "region": config.region,
            "action": config.action,
            "serving_region": report.serving_region,
            "seconds": round(report.seconds, 3),
            "rpo_seconds_estimate": round(report.rpo_seconds, 1) if report.rpo_seconds is not None else "n/a",
            "rpo_partitions": report.rpo_partitions
            if report.rpo_partitions is not None
            else "known at failback",
            "report": dg.MetadataValue.json(json.loads(json.dumps(summary, default=str))),
        }
    )
    context.log.info(
        f"{config.region}: {config.action} done in {report.seconds:.2f}s → {report.serving_region}"
    )
    return summary


@dg.job(description="Fail a region over to its DR region, or back. Config: region, action, reason.")
def region_failover():
    region_failover_op()


def _failed_runs(instance: dg.DagsterInstance, region: str, window: timedelta) -> int:
    since = (datetime.now(UTC) - window).timestamp()
    runs = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(since, UTC)
        ),
        limit=200,
    )
    count = 0
    for record in runs:
        tags = record.dagster_run.tags
        if region in (
            tags.get("dagster/partition/region"),
            tags.get("dagster/partition"),
            tags.get("meridian/region"),
        ):
            count += 1
    return count


@dg.sensor(
    job=region_failover,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Probes every active region (storage root and heartbeat, online store, failed runs). "
    "failover.mode automated: launches region_failover after consecutive failed probes; manual: alerts.",
)
def region_health_sensor(
    context: dg.SensorEvaluationContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    online_store: OnlineStoreResource,
    alerting: AlertingResource,
):
    topo = topology.load()
    home = lake.root()
    policy = topo.failover
    # The cursor remembers consecutive failures and the regions ever seen up: a region that
    # was never provisioned (no root yet) is not "down", and is never failed over.
    memory = json.loads(context.cursor) if context.cursor else {}
    streak: dict[str, int] = memory.get("streak", {})
    seen_up: set[str] = set(memory.get("seen_up", []))
    for region in topo.active_region_names:
        if dr.is_failed_over(home, region):
            streak[region] = 0
            continue
        result = dr.probe(topo, home, region, online_store.open)
        failed_runs = _failed_runs(
            context.instance, region, timedelta(minutes=policy.failed_runs_window_minutes)
        )
        problems = list(result.problems)
        if failed_runs >= policy.failed_runs:
            problems.append(f"{failed_runs} failed runs in {policy.failed_runs_window_minutes:.0f} min")
        if not problems:
            seen_up.add(region)
        if region not in seen_up:
            continue
        streak[region] = streak.get(region, 0) + 1 if problems else 0
        if not problems or streak[region] < policy.probe_failures:
            continue
        reason = f"{streak[region]} failed probes: " + "; ".join(problems)
        alerting.send(
            "ERROR", region, "region_health_sensor", f"region-down:{region}", f"{region} is down: {reason}"
        )
        if policy.mode == "automated":
            yield dg.RunRequest(
                run_key=f"failover:{region}:{int(time.time() // 3600)}",
                run_config={
                    "ops": {
                        "region_failover_op": {
                            "config": {"region": region, "action": "failover", "reason": reason}
                        }
                    }
                },
                tags={"meridian/region": region, "meridian/triggered_by": "region_health_sensor"},
            )
    context.update_cursor(json.dumps({"streak": streak, "seen_up": sorted(seen_up)}))
