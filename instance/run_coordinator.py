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

from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

from meridian.run_tags import REGION_TAG, region_of_run_tags


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
