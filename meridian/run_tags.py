"""The region a Dagster run works on, read from its tags (plain strings, no Dagster).

Sensors, schedules and the CLI set `meridian/region`; a run launched from the UI's
launchpad or an asset backfill carries only Dagster's partition tags
(`dagster/partition` = "us-east" for a region-partitioned job, "2026-01-01|us-east" for a
region-day, or a partition range). The run coordinator (instance/run_coordinator.py),
platform health and the cost report all read a run's region with this one rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

REGION_TAG = "meridian/region"
_PARTITION = "dagster/partition"
_PARTITION_REGION = "dagster/partition/region"
# Dagster's tags of a ranged (single-run backfill) run; the CLI sets them to launch one.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
_RANGE = (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG)


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
