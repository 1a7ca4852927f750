"""Standalone asset checks, one module per stage, on what the stage stored.

The in-asset checks (ingestion's reconciliation, drift, performance, residency) judge what
an asset computed while it ran. These re-read the stored partitions afterwards, as their
own steps: they run after their asset in every job that selects it (the daily pipeline,
batch inference), and judge the file as stored, whoever wrote it last.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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


def _days_of_delta_table(lake_table, days: list[str]) -> dict[str, pl.DataFrame] | str:
    """The source's share of each day (without partition columns) from one read of the table's
    newest version (a read per day opened the table, its log, once per day); or why not."""
    where = {"day": list(days), **({"origin": "source"} if "origin" in lake_table.partition_by else {})}
    try:
        frame = lake_table.read(where=where)
    except Exception as error:  # an unreadable table is a finding, not a crash of the check
        return f"unreadable: {type(error).__name__}: {error}"[:300]
    if frame is None:
        return f"no Delta table at {lake_table.uri}"
    frame = frame.with_columns(pl.col("day").cast(pl.String))
    found = {
        d: rows.drop(lake_table.partition_by)
        for (d,), rows in frame.partition_by("day", as_dict=True).items()
    }
    empty = frame.head(0).drop(lake_table.partition_by)
    return {day: found.get(day, empty) for day in days}


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
        by_day: dict[str, pl.DataFrame] | None = None
        if table in DELTA_TABLES:
            by_day = _days_of_delta_table(paths.lake_table(table), days)
            if isinstance(by_day, str):  # unreadable, or no table: a finding for each day
                failing.update({f"{d}|{region_name}": [by_day] for d in days})
                checked += len(days)
                continue
        for day in days:
            checked += 1
            key = f"{day}|{region_name}"
            if by_day is not None:
                frame = by_day[day]
                rows += frame.height
                if found := problems_of(frame, region, date.fromisoformat(day)):
                    failing[key] = found
                continue
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
