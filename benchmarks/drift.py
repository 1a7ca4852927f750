"""Drift metrics: Meridian's `meridian.drift` beside Evidently's `DataDriftPreset` on the same data.

Data (seeded, written once as Parquet and read by both sides): 50 features — 40 numeric
(normal, log-normal, exponential, uniform, Poisson counts; every fourth one shifted in
the current sample) and 10 categorical (3–12 string categories; every third one with
shifted frequencies and one category the reference never saw) — × 1M reference rows ×
1M current rows (`--quick`: 100k × 100k). The data is dirty on purpose: 8 numeric columns
hold NaN (2 %), +inf (0.5 %) and -inf (0.2 %), 8 have integer dtype in the reference and
float in the current sample, 3 categorical columns hold nulls (3 %).

Each side runs in its own process (peak RSS of its process tree is sampled) and times
only the computation, from data frames in memory to results:
- `meridian`: every statistic of `meridian.drift.column_drift` for every column — PSI
  on reference deciles, KS with p-value, Jensen–Shannon, normalised Wasserstein for
  numeric columns; JS, chi-square and PSI for categorical ones — plus PSI with
  Evidently's binning for the comparison below;
- `evidently`: `Report([DataDriftPreset()]).run(current, reference)` and the same with
  `DataDriftPreset(method="psi")`, with the numeric and categorical columns declared (one
  test per column), both timed, in a virtual
  environment of its own under `benchmarks/.work/evidently` (created when missing:
  Evidently 0.7 does not import with pandas 3, which the project does not use anyway).
Agreement: Evidently's own per-column drift path (`get_one_column_drift` with the PSI
stattest: its cleaning of ±inf and NaN, its binning) on every dirty column against
`meridian.drift.psi_evidently_binning`; the largest absolute difference is reported
(tests/test_drift.py asserts it is below 1e-9).

    python benchmarks/drift.py            # 50 features x 1M x 1M
    python benchmarks/drift.py --quick    # 50 features x 100k x 100k
    python benchmarks/drift.py --psi-check --rows 20000   # agreement only (the test)

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

WORK = REPO_ROOT / "benchmarks" / ".work"
EVIDENTLY_VENV = WORK / "evidently"
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas>=2.2,<3", "pyarrow==26.0.1"]
N_NUMERIC, N_CATEGORICAL = 40, 10


def generate(rows: int, directory: Path, seed: int = 5) -> tuple[list[str], list[str]]:
    import numpy as np
    import polars as pl

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = {"reference": {}, "current": {}}
    numeric, categorical = [], []
    for i in range(N_NUMERIC):
        shift = 0.3 if i % 4 == 0 else 0.0
        name = f"num_{i:02d}"
        numeric.append(name)
        for side, delta in (("reference", 0.0), ("current", shift)):
            kind = i % 5
            if kind == 0:
                values = rng.normal(delta, 1.0, rows)
            elif kind == 1:
                values = rng.lognormal(3.0 + delta, 1.0, rows)
            elif kind == 2:
                values = rng.exponential(1.0 + delta, rows)
            elif kind == 3:
                values = rng.uniform(0.0, 1.0 + delta, rows)
            else:
                values = rng.poisson(40 * (1 + delta), rows).astype(np.float64)
            frames[side][name] = values
    for j in range(N_CATEGORICAL):
        name = f"cat_{j:02d}"
        categorical.append(name)
        k = 3 + j
        cats = np.array([f"c{c}" for c in range(k + 1)])  # the last one only in a drifted current
        base = rng.dirichlet(np.full(k, 2.0))
        frames["reference"][name] = cats[rng.choice(k, rows, p=base)]
        if j % 3 == 0:
            drifted = np.append(base * 0.9, 0.0)
            drifted[0] += 0.05
            drifted[-1] = 0.05
            frames["current"][name] = cats[rng.choice(k + 1, rows, p=drifted / drifted.sum())]
        else:
            frames["current"][name] = cats[rng.choice(k, rows, p=base)]
    # Dirty data, as users' data is: nulls and NaN, ±inf, and a column whose dtype differs
    # between the sides (integer counts in the reference, the same counts as floats now).
    for i, name in enumerate(numeric):
        for side in ("reference", "current"):
            values = frames[side][name]
            if i % 5 == 1:
                values = values.copy()
                values[rng.random(rows) < 0.02] = np.nan
                values[rng.random(rows) < 0.005] = np.inf
                values[rng.random(rows) < 0.002] = -np.inf
            frames[side][name] = values
        if i % 5 == 4:
            frames["reference"][name] = frames["reference"][name].astype(np.int64)
    for j, name in enumerate(categorical):
        if j % 4 == 1:
            for side in ("reference", "current"):
                values = frames[side][name].astype(object)
                values[rng.random(rows) < 0.03] = None
                frames[side][name] = values
    for side, columns in frames.items():
        pl.DataFrame({c: pl.Series(c, v, strict=False) for c, v in columns.items()}).write_parquet(
            directory / f"{side}.parquet"
        )
    (directory / "columns.json").write_text(json.dumps({"numeric": numeric, "categorical": categorical}))
    return numeric, categorical


# ---------------------------------------------------------------- phases (child processes)


def phase_meridian(directory: Path) -> None:
    import polars as pl

    from meridian.drift import frame_drift, psi_evidently_binning

    columns = json.loads((directory / "columns.json").read_text())
    reference = pl.read_parquet(directory / "reference.parquet")
    current = pl.read_parquet(directory / "current.parquet")
    kinds = {c: "numeric" for c in columns["numeric"]} | {c: "categorical" for c in columns["categorical"]}
    started = time.perf_counter()
    results = {r.column: r for r in frame_drift(reference, current, list(kinds), kinds=kinds)}
    seconds = time.perf_counter() - started
    psi = {c: psi_evidently_binning(reference[c], current[c], k) for c, k in kinds.items()}
    print(
        json.dumps(
            {
                "seconds": seconds,
                "drifted": sorted(c for c, r in results.items() if r.status == "error"),
                "psi_evidently_binning": psi,
            }
        )
    )


def phase_evidently(directory: Path, report: bool) -> None:
    import pandas as pd
    from evidently.legacy.calculations.data_drift import get_one_column_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.options.data_drift import DataDriftOptions
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.utils.data_operations import process_columns

    columns = json.loads((directory / "columns.json").read_text())
    reference = pd.read_parquet(directory / "reference.parquet")
    current = pd.read_parquet(directory / "current.parquet")
    out: dict[str, object] = {}
    if report:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(
            numerical_columns=columns["numeric"], categorical_columns=columns["categorical"]
        )
        for key, preset in (
            ("seconds", DataDriftPreset()),
            ("psi_preset_seconds", DataDriftPreset(method="psi")),
        ):
            started = time.perf_counter()
            ref = Dataset.from_pandas(reference, data_definition=definition)
            cur = Dataset.from_pandas(current, data_definition=definition)
            snapshot = Report([preset]).run(cur, ref)
            out[key] = time.perf_counter() - started
            out["metrics"] = len(snapshot.dict().get("metrics", []))
    # PSI as Evidently's own drift path computes it per column (its cleaning of ±inf and NaN,
    # its binning, its zero filling), on the same dirty data.
    mapping = ColumnMapping(
        numerical_features=columns["numeric"], categorical_features=columns["categorical"]
    )
    dataset_columns = process_columns(reference, mapping)
    options = DataDriftOptions(all_features_stattest="psi")
    kinds = {c: ColumnType.Numerical for c in columns["numeric"]} | {
        c: ColumnType.Categorical for c in columns["categorical"]
    }
    out["psi"] = {
        c: float(
            get_one_column_drift(
                current_data=current,
                reference_data=reference,
                column_name=c,
                options=options,
                dataset_columns=dataset_columns,
                column_type=k,
                agg_data=True,
            ).drift_score
        )
        for c, k in kinds.items()
    }
    print(json.dumps(out))


# ---------------------------------------------------------------- parent


def ensure_evidently() -> Path:
    """Evidently's own virtual environment, made once (and again when its pins change).

    Its stamp is written last and the whole set-up holds a lock, so a caller that arrives
    while another process is still installing (.ci/run starts the install early, beside the
    project's own) waits for it instead of running a half-installed environment."""
    import fcntl
    import shutil

    python = EVIDENTLY_VENV / "bin" / "python"
    stamp = EVIDENTLY_VENV / ".installed"
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "evidently.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != " ".join(EVIDENTLY_PINS):
            print(f"creating {EVIDENTLY_VENV} with {' '.join(EVIDENTLY_PINS)} …", flush=True)
            shutil.rmtree(EVIDENTLY_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *EVIDENTLY_PINS], check=True)
            stamp.write_text(" ".join(EVIDENTLY_PINS))
    return python


def run_phase(python: str, args: list[str]) -> tuple[dict, float]:
    """The phase's JSON line and the peak RSS (MB) of its process tree."""
    import tempfile

    import psutil

    with tempfile.TemporaryFile("w+") as sink:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(
            [python, __file__, *args],
            cwd=REPO_ROOT,
            stdout=sink,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
            time.sleep(0.05)
        sink.seek(0)
        out = sink.read()
    if proc.returncode != 0:
        raise SystemExit(f"phase {args[:2]} failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1]), peak / 2**20


def psi_agreement(ours: dict[str, float], theirs: dict[str, float]) -> float:
    return max(abs(ours[c] - theirs[c]) for c in theirs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, help="rows per side (default 1M, --quick 100k)")
    parser.add_argument("--psi-check", action="store_true", help="PSI agreement only, no timing")
    parser.add_argument("--phase", choices=["meridian", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ensure-evidently", action="store_true", help="only set up Evidently's environment")
    args = parser.parse_args()
    if args.ensure_evidently:
        print(ensure_evidently())
        return
    if args.phase == "meridian":
        phase_meridian(Path(args.data))
        return
    if args.phase == "evidently":
        phase_evidently(Path(args.data), report=not args.no_report)
        return

    rows = args.rows or (100_000 if args.quick else 1_000_000)
    load_before = os.getloadavg()[0]
    data = WORK / "drift" / f"rows-{rows}"
    if not (data / "columns.json").exists():
        print(
            f"generating {N_NUMERIC + N_CATEGORICAL} features x {rows:,} reference x {rows:,} current rows …"
        )
        generate(rows, data)
    evidently = str(ensure_evidently())
    ours, ours_rss = run_phase(sys.executable, ["--phase", "meridian", "--data", str(data)])
    extra = ["--no-report"] if args.psi_check else []
    theirs, theirs_rss = run_phase(evidently, ["--phase", "evidently", "--data", str(data), *extra])
    diff = psi_agreement(ours["psi_evidently_binning"], theirs["psi"])
    figures = {"benchmark": "drift", "rows": rows, "features": N_NUMERIC + N_CATEGORICAL}
    figures["psi_max_abs_diff_vs_evidently"] = diff
    if not args.psi_check:
        speedup = theirs["seconds"] / ours["seconds"]
        psi_speedup = theirs["psi_preset_seconds"] / ours["seconds"]
        print(f"{'':<34}{'seconds':>10}{'peak RSS MB':>14}")
        print(f"{'meridian (every statistic)':<34}{ours['seconds']:>10.2f}{ours_rss:>14.0f}")
        print(f"{'evidently DataDriftPreset()':<34}{theirs['seconds']:>10.2f}{theirs_rss:>14.0f}")
        print(f"{'evidently DataDriftPreset(psi)':<34}{theirs['psi_preset_seconds']:>10.2f}{'':>14}")
        print(
            f"meridian is {speedup:.1f}x faster than the default preset (target >= 50) and {psi_speedup:.1f}x "
            f"faster than the PSI preset (target >= 20), computing 4-5 statistics per column where a preset "
            f"computes one; columns in ERROR: {len(ours['drifted'])}"
        )
        print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        figures |= {
            "meridian_s": round(ours["seconds"], 3),
            "evidently_s": round(theirs["seconds"], 3),
            "evidently_psi_preset_s": round(theirs["psi_preset_seconds"], 3),
            "speedup_vs_evidently": round(speedup, 2),
            "speedup_vs_evidently_psi_preset": round(psi_speedup, 2),
            "peak_rss_mb": round(ours_rss),
            "evidently_peak_rss_mb": round(theirs_rss),
            "drifted_columns": ours["drifted"],
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    print(f"PSI with Evidently's binning vs Evidently, largest absolute difference: {diff:.3g}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
