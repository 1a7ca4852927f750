"""The README's main command, timed: where a default run's seconds go, region by region and stage by stage.

Runs `meridian run` (the command `scripts/run.sh` runs, same defaults) on a fresh
MERIDIAN_HOME, then reads the instance it wrote: every Dagster run's start and end and
every step's start and end. It prints

- the wall time of the command beside the target (90 s) and the last figure before this
  benchmark existed (the issue's 165 s, measured under load),
- per region, each stage's seconds (step start to step end, checks included),
- the fixed cost per Dagster run: its seconds outside any step, and the floor measured
  here — an in-process run of a job that does nothing, on a SQLite instance like the
  default's, and the start of a process that loads the definitions (what each worker pays
  once) — so the share of overhead in the total is visible.

    python benchmarks/main_job.py                      # the default run (3 regions, 62 days)
    python benchmarks/main_job.py -- --regions eu-west # arguments after -- go to `meridian run`

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TARGET_SECONDS = 90.0
BASELINE_SECONDS = 165.0  # issue 18: the default run under load, before this work
FLOOR_SCRIPT = """
import os, statistics, sys, tempfile, time, warnings
warnings.filterwarnings("ignore")
started = time.perf_counter()
import dagster as dg
from assets.definitions_file import load_definitions_module
load_definitions_module()
load_seconds = time.perf_counter() - started

@dg.op
def nothing():
    return None

@dg.job
def empty():
    nothing()

with tempfile.TemporaryDirectory() as home:
    os.environ["DAGSTER_HOME"] = home
    from cli.runs import prepare_environment
    prepare_environment(__import__("pathlib").Path(home))
    with dg.DagsterInstance.get() as instance:
        runs = []
        for _ in range(6):
            t = time.perf_counter()
            assert empty.execute_in_process(instance=instance).success
            runs.append(time.perf_counter() - t)
print(load_seconds, statistics.median(runs[1:]))
"""


def measure_floor(python: str) -> tuple[float, float]:
    """Seconds to start a process and load the definitions; median seconds of an empty run."""
    out = subprocess.run(
        [python, "-c", FLOOR_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def read_runs(dagster_home: Path) -> list[dict]:
    """Every run of the instance: job, region, start/end, and each step's seconds."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    runs = []
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            run = record.dagster_run
            steps: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for stats in instance.get_run_step_stats(run.run_id):
                steps[stats.step_key] = [stats.start_time or 0.0, stats.end_time or 0.0]
            runs.append(
                {
                    "job": run.job_name,
                    "region": run.tags.get("meridian/region", "global"),
                    "start": record.start_time or 0.0,
                    "end": record.end_time or 0.0,
                    "steps": {k: round(e - s, 3) for k, (s, e) in steps.items()},
                    "status": run.status.value,
                }
            )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(REPO_ROOT / ".venv" / "bin" / "python"))
    parser.add_argument(
        "--existing", help="read the runs of this MERIDIAN_HOME instead of running (wall time unknown)"
    )
    parser.add_argument("run_args", nargs="*", help="arguments for `meridian run` (after --)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.existing:
        runs, wall, marks = read_runs(Path(args.existing) / "dagster"), float("nan"), {}
    else:
        runs, wall, marks = run_main_job(args.python, args.run_args)
    load_after = os.getloadavg()
    report(runs, wall, marks, load_before, load_after, *measure_floor(args.python))


def run_main_job(python: str, run_args: list[str]) -> tuple[list[dict], float, dict[str, float]]:
    """Runs the command; also returns when its milestones printed (seconds from the start)."""
    with tempfile.TemporaryDirectory(prefix="meridian-main-job-") as home:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [python, "-m", "cli", "run", "--home", home, *run_args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines, marks = [], {}
        for line in proc.stdout:
            now = time.perf_counter() - started
            lines.append(line)
            if line.startswith("Materializing"):
                marks.setdefault("command parsed, regions about to start", now)
            elif line.startswith("  [") and "[global" not in line:
                marks.setdefault("first region stage started", now)
                marks["last region stage done"] = now
            elif line.startswith("Summary"):
                marks["summary printing"] = now
            elif line.startswith("  [global"):
                marks.setdefault("global services started", now)
                marks["global services done"] = now
        code = proc.wait()
        wall = time.perf_counter() - started
        marks["command exited"] = wall
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        marks["CPU seconds (all its processes)"] = usage.ru_utime + usage.ru_stime
        if code != 0:
            sys.stdout.write("".join(lines[-60:]))
            raise SystemExit(f"meridian run failed with exit code {code}")
        return read_runs(Path(home) / "dagster"), wall, marks


def report(runs, wall, marks, load_before, load_after, process_seconds, empty_run) -> None:
    from cli.runs import STAGES

    first = min(r["start"] for r in runs)
    last = max(r["end"] for r in runs)
    per_region: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    overhead: dict[str, float] = defaultdict(float)
    span: dict[str, list[float]] = defaultdict(lambda: [float("inf"), 0.0])
    for run in runs:
        in_steps = 0.0
        for key, seconds in run["steps"].items():
            stage = STAGES.get(key.split(".")[0], key)[:24]
            per_region[run["region"]][stage] += seconds
            in_steps += seconds
        overhead[run["region"]] += max(0.0, (run["end"] - run["start"]) - in_steps)
        span[run["region"]][0] = min(span[run["region"]][0], run["start"])
        span[run["region"]][1] = max(span[run["region"]][1], run["end"])

    regions = sorted(per_region, key=lambda r: (r == "global", r))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)\n")
    print(f"{'stage':<24}" + "".join(f"{r:>14}" for r in regions))
    stages = list(dict.fromkeys(s for r in regions for s in per_region[r]))
    for stage in stages:
        print(f"{stage:<24}" + "".join(f"{per_region[r].get(stage, 0.0):>14.1f}" for r in regions))
    print(f"{'outside steps (runs)':<24}" + "".join(f"{overhead[r]:>14.1f}" for r in regions))
    print(f"{'runs':<24}" + "".join(f"{sum(1 for x in runs if x['region'] == r):>14}" for r in regions))
    print(f"{'first run start → end':<24}" + "".join(f"{span[r][1] - span[r][0]:>14.1f}" for r in regions))
    in_runs = last - first
    print(
        f"\nmain job: {wall:.1f} s wall (target {TARGET_SECONDS:.0f} s; {BASELINE_SECONDS:.0f} s before, "
        f"under load) — {in_runs:.1f} s from the first run's start to the last run's end, "
        f"{wall - in_runs:.1f} s before and after (process start, schema set-up, workers, summary)"
    )
    if marks:
        print(
            "milestones (seconds from the command's start, as its lines printed): "
            + "; ".join(f"{what} {at:.1f}" for what, at in marks.items())
        )
    total_runs = len(runs)
    print(
        f"floor: an empty in-process run {empty_run * 1000:.0f} ms on SQLite "
        f"(× {total_runs} runs = {empty_run * total_runs:.1f} s of run time in all); "
        f"a process that loads the definitions {process_seconds:.1f} s (once per worker)"
    )
    print(
        json.dumps(
            {
                "wall_seconds": round(wall, 2),
                "target_seconds": TARGET_SECONDS,
                "baseline_seconds": BASELINE_SECONDS,
                "runs": total_runs,
                "milestones": {k: round(v, 2) for k, v in marks.items()},
                "empty_run_seconds": round(empty_run, 3),
                "process_with_definitions_seconds": round(process_seconds, 2),
                "outside_steps_seconds": {r: round(v, 2) for r, v in overhead.items()},
                "stages": {r: {s: round(v, 2) for s, v in per_region[r].items()} for r in regions},
                "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
                "median_stage_seconds": round(
                    statistics.median([v for r in regions for v in per_region[r].values()]), 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
