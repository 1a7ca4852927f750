"""Region × day partitions: every regional asset is partitioned the same way."""

from collections import defaultdict

import dagster as dg

from meridian.generator import HISTORY_START
from meridian.topology import Topology

REGION_DIMENSION = "region"
DAY_DIMENSION = "day"


def build_region_day_partitions(topology: Topology, start_date: str) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            REGION_DIMENSION: dg.StaticPartitionsDefinition(topology.active_region_names),
            DAY_DIMENSION: dg.DailyPartitionsDefinition(start_date=start_date),
        }
    )


def days_by_region(context: dg.AssetExecutionContext) -> dict[str, list[str]]:
    """The run's partitions grouped by region, days sorted. Works for one key or a range."""
    grouped: dict[str, set[str]] = defaultdict(set)
    for key in context.partition_keys:
        dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else _parse(key)
        grouped[dims[REGION_DIMENSION]].add(dims[DAY_DIMENSION])
    return {region: sorted(days) for region, days in grouped.items()}


def _parse(key: str) -> dict[str, str]:
    # Serialized multi-partition keys are the dimension values joined by "|",
    # ordered by dimension name: "day|region".
    day, region = key.split("|")
    return {DAY_DIMENSION: day, REGION_DIMENSION: region}


def _default_topology() -> Topology:
    import os

    from meridian.topology import load_topology

    return load_topology(os.environ.get("MERIDIAN_TOPOLOGY"))


TOPOLOGY = _default_topology()
REGION_DAY_PARTITIONS = build_region_day_partitions(TOPOLOGY, HISTORY_START.isoformat())
REGION_PARTITIONS = dg.StaticPartitionsDefinition(TOPOLOGY.active_region_names)
