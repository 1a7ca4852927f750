"""The regional pipeline at growing sizes: seconds, cost per row and peak memory per stage.

One region, `--days` days (30), at each of `--sizes` rows per day (5k, 50k, 500k): the
regional pipeline as `meridian run` runs it (ingest transactions and chargebacks, dbt
build, feature views, online store), then the training set when the window holds
trainable days (`meridian.run_window.MIN_TRAINING_DAYS`: feature warm-up + label maturity
+ 3; with fewer days the stage is reported as skipped, not timed on an empty set). Each
size runs in a child process on a fresh MERIDIAN_HOME; this process samples the RSS of
the child's whole process tree (dbt's subprocess included) every 50 ms, and each stage's
seconds and peak come from the step start and end times Dagster recorded.

Printed per stage: seconds at each size, microseconds per row, peak MB, and the exponent
of a log-log fit of seconds against rows (1.0: linear; below 1: the cost per row falls
as rows grow; fixed costs pull it down at the small sizes).

    python benchmarks/scaling.py                      # 5k, 50k, 500k rows/day x 30 days
    python benchmarks/scaling.py --sizes 5000,50000   # quicker
    python benchmarks/scaling.py --days 53            # with the training set

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from harness import sample_tree_rss  # noqa: E402

REGION = "us-east"
START = date(2026, 1, 1)


def child(home: Path, rows: int, n_days: int) -> None:
    """The pipeline over the window, then the training set when the window can train."""
    from cli.runs import RunPlan, prepare_environment, quiet_libraries, run_region

    quiet_libraries()
    prepare_environment(home)
    import dagster as dg

    from assets.definitions_file import load_definitions_module
    from meridian.run_window import MIN_TRAINING_DAYS

    days = [(START + timedelta(days=i)).isoformat() for i in range(n_days)]
    module = load_definitions_module()
    with dg.DagsterInstance.get() as instance:
        outcome = run_region(module.defs, instance, REGION, days, RunPlan.pipeline_only(rows), home / "logs")
        if not outcome.success:
            raise SystemExit(f"pipeline failed at {rows} rows/day: {outcome.error}")
        if n_days >= MIN_TRAINING_DAYS:
            result = module.defs.resolve_job_def("ml_training").execute_in_process(
                instance=instance,
                partition_key=REGION,
                asset_selection=[dg.AssetKey("training_set")],
                tags={"meridian/region": REGION},
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                raise_on_error=False,
            )
            if not result.success:
                raise SystemExit(f"training set failed at {rows} rows/day")


def run_size(rows: int, n_days: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(seconds per stage, peak MB per stage, wall seconds) of one size, in a child process."""
    with tempfile.TemporaryDirectory(prefix=f"meridian-scaling-{rows}-") as home:
        samples: list[tuple[float, int]] = []
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", home, str(rows), str(n_days)], cwd=REPO_ROOT
        )
        done = threading.Event()
        sampler = threading.Thread(target=sample_tree_rss, args=(proc.pid, done, samples), daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        if code != 0:
            raise SystemExit(f"the {rows} rows/day run failed (exit code {code})")
        seconds: dict[str, float] = defaultdict(float)
        peak: dict[str, float] = defaultdict(float)
        for stage, start, end in _steps(Path(home) / "dagster"):
            seconds[stage] += end - start
            inside = [rss for t, rss in samples if start <= t <= end]
            peak[stage] = max(peak[stage], max(inside, default=0) / 2**20)
        return dict(seconds), dict(peak), wall


def _steps(dagster_home: Path) -> list[tuple[str, float, float]]:
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    from cli.runs import STAGES

    out = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            for stats in instance.get_run_step_stats(record.dagster_run.run_id):
                if stats.start_time and stats.end_time:
                    stage = STAGES.get(stats.step_key.split(".")[0], stats.step_key)
                    out.append((stage[:24], stats.start_time, stats.end_time))
    return out


def exponent(rows: list[int], seconds: list[float]) -> float | None:
    """Slope of the least-squares line through (log rows, log seconds)."""
    points = [(math.log(r), math.log(s)) for r, s in zip(rows, seconds, strict=True) if s > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000,500000", help="rows per day, comma-separated")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        home, rows, n_days = args.child
        child(Path(home), int(rows), int(n_days))
        return
    from meridian.run_window import MIN_TRAINING_DAYS

    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    results = {rows: run_size(rows, args.days) for rows in sizes}
    load_after = os.getloadavg()[0]
    stages = list(dict.fromkeys(s for seconds, _, _ in results.values() for s in seconds))
    print(
        f"\nload average before {load_before:.2f}, after {load_after:.2f} (2 cores); {args.days} days, one region"
    )
    if args.days < MIN_TRAINING_DAYS:
        print(
            f"training set: skipped, {args.days} days hold no trainable row (it needs {MIN_TRAINING_DAYS}: "
            "feature warm-up, label maturity, 3 days to split); --days 53 includes it"
        )
    header = "".join(f"{f'{r:,}/day s':>13}{'µs/row':>9}{'peak MB':>9}" for r in sizes)
    print(f"\n{'stage':<24}{header}{'exponent':>10}")
    figures: dict[str, dict] = {}
    for stage in [*stages, "total (wall)"]:
        cells, secs = "", []
        for rows in sizes:
            seconds, peak, wall = results[rows]
            s = wall if stage == "total (wall)" else seconds.get(stage, 0.0)
            mb = max(peak.values(), default=0.0) if stage == "total (wall)" else peak.get(stage, 0.0)
            secs.append(s)
            cells += f"{s:>13.2f}{s / (rows * args.days) * 1e6:>9.2f}{mb:>9.0f}"
        k = exponent(sizes, secs)
        print(f"{stage:<24}{cells}{'' if k is None else f'{k:>10.2f}'}")
        figures[stage] = {
            "seconds": [round(s, 3) for s in secs],
            "exponent": None if k is None else round(k, 3),
        }
    print(
        json.dumps(
            {
                "rows_per_day": sizes,
                "days": args.days,
                "stages": figures,
                "peak_mb": {r: round(max(p.values(), default=0.0)) for r, (_, p, _) in results.items()},
                "load_average": [round(load_before, 2), round(load_after, 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
