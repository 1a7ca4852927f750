"""A queued run coordinator that tags every run with the region it works on.

The per-region limits of the run queue (`tag_concurrency_limits` on `meridian/region` in
platform/dagster*.yaml: one run per region at a time, regions in parallel) hold only for
runs that carry the tag. Sensors, schedules and the CLI set it; a run launched from the
UI's launchpad or an asset backfill carries only Dagster's partition tags
(`dagster/partition` = "us-east" for a region-partitioned job, "2026-01-01|us-east" for a
region-day, or a partition range). This coordinator derives the region from those tags
when a run is submitted, before it is queued, so the limit holds on every launch path.
A run over several regions (a range from one region to another) gets no region tag: it
takes each region's warehouse lock in turn instead (assets/transforms.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

REGION_TAG = "meridian/region"
_PARTITION = "dagster/partition"
_PARTITION_REGION = "dagster/partition/region"
_RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _region_in_key(key: str, regions: Sequence[str] | None) -> str | None:
    # Serialized region x day keys join the dimensions by "|", ordered by name: "day|region".
    candidate = key.split("|")[-1] if key else ""
    if not candidate:
        return None
    return candidate if regions is None or candidate in regions else None


def region_of_run_tags(tags: Mapping[str, str], regions: Sequence[str] | None = None) -> str | None:
    """The one region a run works on, from its tags; None for a run over several regions or none."""
    if tags.get(REGION_TAG):
        return tags[REGION_TAG]
    if tags.get(_PARTITION_REGION):
        return _region_in_key(tags[_PARTITION_REGION], regions)
    if tags.get(_PARTITION):
        return _region_in_key(tags[_PARTITION], regions)
    if all(tags.get(t) for t in _RANGE):
        first, last = (_region_in_key(tags[t], regions) for t in _RANGE)
        return first if first == last else None
    return None


class RegionRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that adds `meridian/region` to a run that lacks it, then queues it."""

    def _regions(self) -> list[str]:
        from meridian.settings import settings
        from meridian.topology import load_topology

        return [r.name for r in load_topology(settings().topology_path).regions]

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        region = region_of_run_tags(run.tags, self._regions())
        if region and run.tags.get(REGION_TAG) != region:
            self._instance.add_run_tags(run.run_id, {REGION_TAG: region})
            refreshed = self._instance.get_run_by_id(run.run_id)
            if refreshed is not None:
                context = SubmitRunContext(refreshed, context.workspace)
        return super().submit_run(context)
