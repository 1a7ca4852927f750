"""The landing-zone sensor: a file delivered to a region's landing zone starts its ingestion.

A hand-written sensor because what it reacts to is not a Dagster asset event: new or
changed objects under each region's landing prefix (meridian.landing). Each tick lists the
landing zones (stat only; a file is hashed only when its size or mtime changed since it was
last seen), groups what is not yet ingested by region-day and requests one
`regional_pipeline` run per new region-day (or, for a late file, one ranged run from its day
through the region's last ingested day), keyed by the files it carries so a file is
requested once. Files that break the naming contract are alerted, never ignored silently.

The generator's own files (`generator.parquet`) are not requested: the generator delivers
them inside the ingestion run that then reads them, and a tick between its delivery and that
run's record of it would otherwise launch a second, empty run of the day.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import dagster as dg

from assets.jobs import REGIONAL_PIPELINE_JOB
from assets.partitions import DAY_DIMENSION, REGION_DAY_PARTITIONS, REGION_DIMENSION
from meridian import dr, landing
from meridian.landing_stores import landing_for
from meridian.run_tags import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource


def _fingerprint(files: list[landing.LandedFile]) -> str:
    text = "\n".join(f"{f.key}:{f.size}:{f.mtime_ns}" for f in sorted(files, key=lambda f: f.key))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _requests(
    region: str, by_day: dict[str, list[landing.LandedFile]], last: str | None
) -> list[dg.RunRequest]:
    """One run per new day at the frontier; a file for a day before the last ingested one (late
    data) changes the windows of every day after it, so that run covers its day through the last
    ingested day (one single-run backfill: ingestion of the days between is a no-op, dbt
    rebuilds the features from the late day on)."""
    tags = {"meridian/region": region, "meridian/trigger": "landing"}

    def key(day: str) -> dg.MultiPartitionKey:
        return dg.MultiPartitionKey({REGION_DIMENSION: region, DAY_DIMENSION: day})

    late = sorted(day for day in by_day if last is not None and day < last)
    if late:
        end = max(last, *by_day)
        files = [f for day_files in by_day.values() for f in day_files]
        return [
            dg.RunRequest(
                run_key=f"landing:{region}:{late[0]}..{end}:{_fingerprint(files)}",
                tags={
                    **tags,
                    PARTITION_RANGE_START_TAG: str(key(late[0])),
                    PARTITION_RANGE_END_TAG: str(key(end)),
                },
            )
        ]
    return [
        dg.RunRequest(
            run_key=f"landing:{region}:{day}:{_fingerprint(files)}", partition_key=key(day), tags=tags
        )
        for day, files in sorted(by_day.items())
    ]


def _day_keys() -> set[str]:
    dimension = next(d for d in REGION_DAY_PARTITIONS.partitions_defs if d.name == DAY_DIMENSION)
    return set(dimension.partitions_def.get_partition_keys())


@dg.sensor(
    job_name=REGIONAL_PIPELINE_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: files delivered to a region's landing zone and not yet ingested; "
    "one regional_pipeline run per new region-day, a ranged one from a late file's day on.",
)
def landing_sensor(
    context: dg.SensorEvaluationContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
):
    topo = topology.load()
    home = lake.root()
    days = _day_keys()
    requests: list[dg.RunRequest] = []
    zones = {}
    for region in topo.active_region_names:
        if dr.is_failed_over(home, region):
            continue  # the region's storage is its DR site's now: producers deliver after failback
        if down := dr.site_down(topo, home, region):
            context.log.warning(f"{region}: landing zone not scanned while its storage is down: {down}")
            continue
        root = lake.primary_paths(topo, region).root
        zones[region] = (root, landing_for(region, root))
    # Every zone is listed at once: a frozen endpoint costs its own region its timeout, never
    # delays another region's files.
    with ThreadPoolExecutor(max_workers=max(1, len(zones)), thread_name_prefix="landing-scan") as pool:
        scans = {
            region: pool.submit(landing.pending, root, store=store) for region, (root, store) in zones.items()
        }
    for region, scan in scans.items():
        root, store = zones[region]
        try:
            pending, misplaced = scan.result()
        except Exception as error:
            context.log.warning(f"{region}: landing zone {store} unreachable: {error}")
            alerting.send(
                "ERROR",
                region,
                "landing_sensor",
                f"landing-unreachable:{region}",
                f"{region}'s landing zone {store} is unreachable: {type(error).__name__}: {error}",
            )
            continue
        for problem in misplaced:
            alerting.send(
                "WARN",
                region,
                "landing_sensor",
                f"landing-misplaced:{region}:{problem.key}",
                f"landing/{problem.key} is not ingested: {problem.reason}",
            )
        by_day: dict[str, list[landing.LandedFile]] = {}
        for landed in pending:
            if landed.key.endswith(f"/{landing.GENERATOR_FILE}"):
                continue  # delivered by the ingestion run that reads it (see above)
            by_day.setdefault(landing.day_of(landed.key), []).append(landed)
        valid: dict[str, list[landing.LandedFile]] = {}
        for day, files in sorted(by_day.items()):
            if day not in days:
                alerting.send(
                    "WARN",
                    region,
                    "landing_sensor",
                    f"landing-day:{region}:{day}",
                    f"{len(files)} file(s) delivered for {day}, outside the days the platform "
                    f"partitions ({min(days)} to {max(days)}): not ingested",
                    {"files": [f.key for f in files][:20]},
                )
                continue
            valid[day] = files
        if valid:
            requests.extend(_requests(region, valid, landing.last_ingested_day(root)))
    if not requests:
        return dg.SkipReason("no new or changed files in any landing zone")
    return requests
