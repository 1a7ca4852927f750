"""Dagster's SQLite event log against Meridian's pooled one (instance/event_log.py).

One ranged run of a partitioned asset graph (6 assets x 60 daily partitions, one run, as
`meridian run` launches a region's days) on a fresh instance with each storage, then 300
stored materialization events straight through the instance. Three set-ups: Dagster's
storage as shipped (no batches), the pooled storage storing event by event
(DAGSTER_EVENT_BATCH_SIZE=0), and the pooled storage as shipped (batches in one
transaction per shard). All run in this one process, alternating, so the ratios are fair.

    .venv/bin/python benchmarks/event_log.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instance.event_log import EVENT_BATCH_SIZE
from meridian.profiles import install_instance_config

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-03-02")


def graph() -> list[dg.AssetsDefinition]:
    """Six chained assets, each handling a range of days in one step, as Meridian's do."""
    assets = []
    upstream = None
    for index in range(6):

        @dg.asset(
            name=f"stage_{index}",
            partitions_def=DAYS,
            deps=[upstream] if upstream else [],
            backfill_policy=dg.BackfillPolicy.single_run(),
        )
        def stage(context) -> dg.MaterializeResult:  # Dagster records one event per day
            return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})

        assets.append(stage)
        upstream = stage
    return assets


# set-up -> (storage, DAGSTER_EVENT_BATCH_SIZE)
SETUPS = {
    "dagster": ("dagster", "0"),
    "pooled": ("pooled", "0"),
    "batched": ("pooled", str(EVENT_BATCH_SIZE)),
}
LABELS = {
    "dagster": "Dagster SqliteEventLogStorage",
    "pooled": "pooled, event by event",
    "batched": "pooled + batches (as shipped)",
}


def instance_dir(kind: str, root: Path) -> Path:
    storage, batch_size = SETUPS[kind]
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = batch_size
    directory = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))
    if storage == "pooled":
        install_instance_config(directory, "local")
    else:  # Dagster's default SQLite storage, otherwise the same instance configuration
        (directory / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return directory


def ranged_run(kind: str, root: Path) -> tuple[float, int]:
    with dg.DagsterInstance.from_config(str(instance_dir(kind, root))) as instance:
        started = time.perf_counter()
        result = dg.materialize(
            graph(),
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags={
                ASSET_PARTITION_RANGE_START_TAG: DAYS.get_first_partition_key(),
                ASSET_PARTITION_RANGE_END_TAG: DAYS.get_last_partition_key(),
            },
        )
        elapsed = time.perf_counter() - started
        assert result.success
        events = len(instance.all_logs(result.run_id))
    return elapsed, events


def stored_events(kind: str, root: Path, count: int = 300) -> float:
    with dg.DagsterInstance.from_config(str(instance_dir(kind, root))) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("warm"))
        started = time.perf_counter()
        for index in range(count):
            instance.report_runless_asset_event(dg.AssetMaterialization("a", partition=str(index)))
        return (time.perf_counter() - started) / count * 1000


def main() -> None:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {kind: [] for kind in SETUPS}
    per_event: dict[str, list[float]] = {kind: [] for kind in SETUPS}
    events = 0
    with tempfile.TemporaryDirectory(prefix="event-log-bench-") as temporary:
        root = Path(temporary)
        for _ in range(args.rounds):
            for kind in SETUPS:
                elapsed, events = ranged_run(kind, root)
                runs[kind].append(elapsed)
                per_event[kind].append(stored_events(kind, root))
    print(f"load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds, medians")
    print(f"{'storage':<34}{'ranged run (s)':>16}{'x Dagster':>11}{'ms per event':>14}")
    base = statistics.median(runs["dagster"])
    for kind, label in LABELS.items():
        run = statistics.median(runs[kind])
        print(f"{label:<34}{run:>16.2f}{base / run:>10.1f}x{statistics.median(per_event[kind]):>14.2f}")
    print(f"events in one ranged run: {events}; single events (runless) are never batched")


if __name__ == "__main__":
    main()
