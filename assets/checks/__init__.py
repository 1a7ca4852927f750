"""Standalone asset checks, one module per stage, on what the stage stored.

The in-asset checks (ingestion's reconciliation, drift, performance, residency) judge what
an asset computed while it ran. These re-read the stored partitions afterwards, as their
own steps: they run after their asset in every job that selects it (the daily pipeline,
batch inference), and judge the file as stored, whoever wrote it last.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster_shared.utils.warnings import PreviewWarning

from assets.partitions import REGION_DAY_PARTITIONS, days_by_region
from meridian.lake import partition_file
from meridian.lake_tables import DELTA_TABLES
from meridian.topology import Region
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

SHOWN = 20  # failing partitions listed in the metadata; the count covers all of them

Problems = Callable[[pl.DataFrame, Region, date], list[str]]


def partitioned_check(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetChecksDefinition]:
    """`dg.asset_check` over the region × day partitions, evaluated and shown per partition.

    A partitioned check is a Dagster preview API; its warning would print on every load of
    the definitions (the main job's console among them), so it is silenced for this call.
    """

    def decorate(fn: Callable[..., Any]) -> dg.AssetChecksDefinition:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PreviewWarning)
            return dg.asset_check(partitions_def=REGION_DAY_PARTITIONS, **kwargs)(fn)

    return decorate


# Rows the check holds at once: days are read together up to this (one open of the table and
# its log per batch, not per day), never the whole window (at 500k rows a day, 30 days read
# at once peaked at 13.7 GB: benchmarks/scaling.py).
ROWS_PER_READ = 2_000_000


def _days_of_delta_table(lake_table, days: list[str]) -> Iterator[tuple[str, pl.DataFrame | str]]:
    """(day, the source's share of the day without partition columns) for each of `days`, read
    a batch of days at a time from the table's newest version; a string says why a batch could
    not be read. The first batch is one day; the next hold as many days as ROWS_PER_READ allows
    at the largest day seen so far."""
    largest, at = 0, 0
    while at < len(days):
        batch = days[at : at + (1 if at == 0 else max(1, ROWS_PER_READ // max(largest, 1)))]
        at += len(batch)
        where = {"day": batch, **({"origin": "source"} if "origin" in lake_table.partition_by else {})}
        try:
            frame = lake_table.read(where=where)
        except Exception as error:  # an unreadable table is a finding, not a crash of the check
            reason = f"unreadable: {type(error).__name__}: {error}"[:300]
            yield from ((day, reason) for day in batch)
            continue
        if frame is None:
            yield from ((day, f"no Delta table at {lake_table.uri}") for day in batch)
            continue
        frame = frame.with_columns(pl.col("day").cast(pl.String))
        found = {d: rows for (d,), rows in frame.partition_by("day", as_dict=True).items()}
        empty = frame.head(0).drop(lake_table.partition_by)
        for day in batch:
            rows = found.pop(day, None)
            largest = max(largest, 0 if rows is None else rows.height)
            yield day, empty if rows is None else rows.drop(lake_table.partition_by)


def check_stored_partitions(
    context: dg.AssetCheckExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    table: str,
    problems_of: Problems,
) -> dg.AssetCheckResult:
    """Every region-day of the run's partitions of `table`, read back and judged."""
    topo = topology.load()
    failing: dict[str, list[str]] = {}
    rows = 0
    checked = 0
    for region_name, days in days_by_region(context).items():
        region = topo.region(region_name)
        paths = lake.paths(topo, region_name)
        if table in DELTA_TABLES:
            for day, frame in _days_of_delta_table(paths.lake_table(table), days):
                checked += 1
                key = f"{day}|{region_name}"
                if isinstance(frame, str):  # unreadable, or no table: a finding for the day
                    failing[key] = [frame]
                    continue
                rows += frame.height
                if found := problems_of(frame, region, date.fromisoformat(day)):
                    failing[key] = found
            continue
        for day in days:
            checked += 1
            key = f"{day}|{region_name}"
            path: Path = partition_file(paths.table(table), day)
            if not path.exists():
                failing[key] = [f"no stored partition at {path}"]
                continue
            try:
                frame = pl.read_parquet(path)
            except Exception as error:  # an unreadable file is a finding, not a crash of the check
                failing[key] = [f"unreadable: {type(error).__name__}: {error}"[:300]]
                continue
            rows += frame.height
            found = problems_of(frame, region, date.fromisoformat(day))
            if found:
                failing[key] = found
    shown = dict(sorted(failing.items())[:SHOWN])
    return dg.AssetCheckResult(
        passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "partitions_checked": checked,
            "rows_checked": rows,
            "failing_partitions": len(failing),
            "failures": dg.MetadataValue.json(shown),
            "failures_not_shown": len(failing) - len(shown),
        },
    )
