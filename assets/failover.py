"""Failover: `region_failover` (an op job; Launchpad config or `meridian failover`) promotes
the DR region for a region, or fails it back. `region_health_sensor` probes every active
region (storage root, heartbeat, online store, failed runs) and, with `failover.mode:
automated`, launches the failover itself after consecutive failed probes.
"""

import json
from datetime import UTC, datetime
from typing import Literal

import dagster as dg
from pydantic import Field

from meridian import dr
from meridian.dr import health
from meridian.run_tags import region_of_run_tags
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.online_store import OnlineStoreResource
from resources.topology import RegionTopologyResource

FAILOVER_TAG = "meridian/failover_region"


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
    mlflow_tracking: MlflowTrackingResource,
) -> dict:
    topo = topology.load()
    if config.region not in topo.active_region_names:
        raise dg.Failure(f"unknown or standby region {config.region!r}; active: {topo.active_region_names}")
    home = lake.root()
    by = context.run.tags.get("meridian/triggered_by", "manual")
    try:
        if config.action == "failover":
            with health.failover_lock(home, config.region):
                report = dr.fail_over(
                    topo,
                    home,
                    config.region,
                    config.reason,
                    by=by,
                    online_replica=online_store.replica_link(config.region),
                )
        else:
            report = dr.fail_back(
                topo,
                home,
                config.region,
                open_store=online_store.open,
                drain_seconds=config.drain_seconds,
                registry_client=mlflow_tracking.client(),
                online_replica=online_store.replica_link(config.region),
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
            if k
            in (
                "replica_versions",
                "rpo_seconds",
                "rpo_partitions",
                "rpo_online_rows",
                "reconciled",
                "online_replica",
            )
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
            "rpo_files": len(report.rpo_files) if config.action == "failback" else "known at failback",
            "rpo_online_rows": report.rpo_online_rows
            if report.rpo_online_rows is not None
            else ("unmeasured" if config.action == "failback" else "known at failback"),
            "online_store_served_by": (report.online_replica or {}).get("serving", "snapshot")
            if config.action == "failover"
            else "the region's own store",
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


def failed_runs_since(instance: dg.DagsterInstance, region: str, since: float) -> int:
    """Failed runs of `region` that ended after `since` (epoch seconds)."""
    runs = instance.get_run_records(
        dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(since, UTC)
        ),
        limit=200,
    )
    return sum(
        1
        for record in runs
        if record.dagster_run.job_name != "region_failover"
        and region_of_run_tags(record.dagster_run.tags) == region
    )


@dg.sensor(
    job=region_failover,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Probes every active region (storage identity and heartbeat, lake tables, warehouse, "
    "online store lookup, failed runs since it last recovered). failover.mode automated: launches "
    "region_failover after consecutive failed probes, once per outage; manual: alerts.",
)
def region_health_sensor(
    context: dg.SensorEvaluationContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    online_store: OnlineStoreResource,
    alerting: AlertingResource,
):
    """Hand-written (no built-in reacts to the health of storage outside Dagster). The rule is
    meridian.dr.health's, its state the cursor. The fallback of the health loop: while the
    loop's heartbeat is fresh, the sensor stands aside (the loop probes every second; a
    daemon tick is 5 s at best)."""
    topo = topology.load()
    home = lake.root()
    policy = topo.failover
    if loop := health.loop_alive(home):
        return dg.SkipReason(
            f"the health loop (pid {loop['pid']}, every {loop['interval_seconds']} s) probes and fails over"
        )
    tracker = health.HealthTracker(policy, json.loads(context.cursor) if context.cursor else None)
    probed = [r for r in topo.active_region_names if not dr.is_failed_over(home, r)]
    for region in sorted(set(topo.active_region_names) - set(probed)):
        tracker.failed_over(region)
    probes = dr.probe_all(topo, home, probed, online_store.open)
    for region in probed:
        result = probes[region]
        verdict = tracker.observe(
            home,
            region,
            result.problems,
            lambda since, r=region: failed_runs_since(context.instance, r, since),
        )
        if not verdict.due:
            continue
        alerting.send(
            "ERROR",
            region,
            "region_health_sensor",
            f"region-down:{verdict.outage_id}",
            f"{region} is down: {verdict.reason}",
        )
        if policy.mode == "automated":
            yield dg.RunRequest(
                # One failover per outage: the daemon drops a repeated key, never a new outage.
                run_key=f"failover:{verdict.outage_id}",
                run_config=failover_run_config(region, verdict.reason),
                # Not `meridian/region`: the failover must not queue behind the region's own
                # runs (its pool allows one run at a time, and those are stuck on the outage).
                tags={FAILOVER_TAG: region, "meridian/triggered_by": "region_health_sensor"},
            )
    context.update_cursor(json.dumps(tracker.to_json()))


def failover_run_config(region: str, reason: str) -> dict:
    return {
        "ops": {"region_failover_op": {"config": {"region": region, "action": "failover", "reason": reason}}}
    }
