"""Region × day partitions: every regional asset is partitioned the same way."""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import dagster as dg

from meridian.reference_data import HISTORY_START
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


def days_by_region(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dict[str, list[str]]:
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
    from meridian.settings import settings
    from meridian.topology import load_topology

    return load_topology(settings().topology_path)


TOPOLOGY = _default_topology()
REGION_DAY_PARTITIONS = build_region_day_partitions(TOPOLOGY, HISTORY_START.isoformat())
REGION_PARTITIONS = dg.StaticPartitionsDefinition(TOPOLOGY.active_region_names)


class RegionFailures:
    """One region's failure in a run over several regions never hides the others' data.

    Each region's work runs under `region(name)`; an exception there is recorded and the
    loop goes on. `raise_if_any` then reports every partition of the regions that
    succeeded as materialized (their files are written and readable) before failing the
    step with every failed region named. With one region in the run, its error is raised
    as it is.
    """

    def __init__(self, context: dg.AssetExecutionContext):
        self.context = context
        self.failed: dict[str, BaseException] = {}

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # the other regions go on
            self.failed[name] = error
            self.context.log.error(f"{name} failed: {type(error).__name__}: {error}")

    def raise_if_any(self, asset_keys: Sequence[dg.AssetKey], days: Mapping[str, Sequence[str]]) -> None:
        if not self.failed:
            return
        if len(days) == 1:
            raise next(iter(self.failed.values()))
        for region, region_days in days.items():
            if region in self.failed:
                continue
            for key in asset_keys:
                for day in region_days:
                    self.context.log_event(
                        dg.AssetMaterialization(
                            asset_key=key,
                            partition=dg.MultiPartitionKey({REGION_DIMENSION: region, DAY_DIMENSION: day}),
                            metadata={"partial_run": f"written; the run failed for {sorted(self.failed)}"},
                        )
                    )
        raise dg.Failure(
            description="failed for "
            + "; ".join(f"{r}: {type(e).__name__}: {e}" for r, e in sorted(self.failed.items()))
            + f" (the other regions' partitions, {sorted(set(days) - set(self.failed))}, are written and reported)",
            metadata={"failed_regions": sorted(self.failed)},
        )
