"""Point-in-time retrieval: Meridian's ASOF join beside a range join + de-duplication.

Synthetic data shaped like the fraud use case: label rows (entity df) for customers and
merchants, and three feature views (two keyed by customer, one by merchant) holding
10M feature rows in all at full size. Each method runs in its own child process on the
same DuckDB file and writes its full result, so the timings include materialisation;
the script then checks that both methods return the same rows.

    python benchmarks/pit_join.py           # 1M label rows x 10M feature rows, 100k entities
    python benchmarks/pit_join.py --quick   # 50k x 500k

Feast's `get_historical_features` (DuckDB offline store over Parquet files) runs on the
same data in a virtual environment of its own, created under benchmarks/.work/ when
missing (its pins clash with the project's). `--no-feast` skips it. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from harness import measure_child  # noqa: E402

from meridian.feature_store import Feature, FeatureView, point_in_time_sql  # noqa: E402

DAYS = 60
VIEWS = (
    FeatureView(
        "spend",
        "spend_view",
        "customer_id",
        "ts",
        "created",
        (Feature("f1", "double", 0.0), Feature("f2", "bigint", 0)),
        timedelta(days=7),
    ),
    FeatureView(
        "velocity",
        "velocity_view",
        "customer_id",
        "ts",
        "created",
        (Feature("f3", "double", 0.0),),
        timedelta(days=2),
    ),
    FeatureView(
        "risk",
        "risk_view",
        "merchant_id",
        "ts",
        "created",
        (Feature("f4", "double", 0.01),),
        timedelta(days=30),
    ),
)
SHARES = {"spend_view": 0.5, "velocity_view": 0.3, "risk_view": 0.2}
FEAST_VENV = REPO_ROOT / "benchmarks" / ".work" / "feast-venv"
FEAST_REQUIREMENTS = ["feast[duckdb]==0.67.0", "pandas<3"]


def feast_python() -> str:
    """Feast's interpreter, creating its virtual environment on first use."""
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FEAST_VENV} for Feast (one-off, a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *FEAST_REQUIREMENTS], check=True)
    return str(python)


def generate(db: Path, labels: int, features: int, entities: int) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    span = DAYS * 86_400
    # Timestamps on whole seconds so that equal feature times (ties) occur.
    for table, share in SHARES.items():
        key = "merchant_id" if table == "risk_view" else "customer_id"
        n_keys = max(1, entities // 10) if table == "risk_view" else entities
        con.execute(f"""
            create table {table} as
            select (hash(i, '{table}k') % {n_keys})::bigint as {key},
                   timestamp '2026-01-01' + to_seconds((hash(i, '{table}t') % {span})::bigint) as ts,
                   timestamp '2026-01-01' + to_seconds((hash(i, '{table}c') % {span})::bigint) as created,
                   (hash(i, '{table}x') % 10000) / 100.0 as f1,
                   (hash(i, '{table}y') % 100)::bigint as f2,
                   (hash(i, '{table}z') % 1000) / 10.0 as f3,
                   (hash(i, '{table}w') % 1000) / 1000.0 as f4
            from range({int(features * share)}) r(i)
        """)
    con.execute(f"""
        create table labels as
        select i as label_id,
               (hash(i, 'lk') % {entities})::bigint as customer_id,
               (hash(i, 'lm') % {max(1, entities // 10)})::bigint as merchant_id,
               timestamp '2026-01-01' + to_seconds((hash(i, 'lt') % {span})::bigint) as event_time
        from range({labels}) r(i)
    """)
    # Feast reads Parquet files; export once, outside every timing.
    for table in (*SHARES, "labels"):
        name = table.removesuffix("_view")
        con.execute(f"copy {table} to '{db.parent / (name + '.parquet')}' (format parquet)")
    con.close()


def range_join_sql() -> str:
    """The usual approach: every feature row in the TTL window, then keep the latest per label."""
    parts, selects = [], ["l.*"]
    for i, v in enumerate(VIEWS):
        feats = ", ".join(f"v.{f.name}" for f in v.features)
        parts.append(f"""
        r{i} as (
            select l.label_id, {feats}, v.ts
            from labels l join {v.source} v
              on v.{v.entity_key} = l.{v.entity_key}
             and v.ts <= l.event_time
             and v.ts >= l.event_time - to_microseconds({int(v.ttl.total_seconds() * 1e6)})
            qualify row_number() over (partition by l.label_id order by v.ts desc, v.created desc) = 1
        )""")
        for f in v.features:
            selects.append(f"coalesce(r{i}.{f.name}, {f.default!r}) as {v.column(f.name)}")
        selects.append(f"r{i}.ts as {v.column('feature_time')}")
    joins = "\n".join(f"left join r{i} using (label_id)" for i in range(len(VIEWS)))
    return "with " + ",".join(parts) + "\nselect " + ", ".join(selects) + "\nfrom labels l\n" + joins


def run_method(db: Path, method: str, out: Path) -> None:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    sql = (
        point_in_time_sql("select * from labels", "event_time", VIEWS)
        if method == "asof"
        else range_join_sql()
    )
    started = time.perf_counter()
    con.execute(f"copy ({sql}) to '{out}' (format parquet)")
    out.with_suffix(".seconds").write_text(f"{time.perf_counter() - started:.4f}")
    con.close()


def agree(a: Path, b: Path) -> tuple[int, int]:
    """Rows of `a` and rows of `a` missing from `b`; unknown values count as the feature default."""
    import duckdb

    con = duckdb.connect()
    cols = ["label_id"] + [
        f"coalesce({v.column(f.name)}::{f.dtype}, {f.default!r}::{f.dtype})"
        for v in VIEWS
        for f in v.features
    ]
    sel = ", ".join(cols)
    rows = con.execute(f"select count(*) from '{a}'").fetchall()[0][0]
    diff = con.execute(
        f"select count(*) from (select {sel} from '{a}' except all select {sel} from '{b}')"
    ).fetchall()[0][0]
    return rows, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast comparison")
    parser.add_argument("--phase", choices=["generate", "asof", "range_join"], help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--features", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--entities", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "generate":
        return generate(Path(args.db), args.labels, args.features, args.entities)
    if args.phase:
        return run_method(Path(args.db), args.phase, Path(args.out))

    labels, features, entities = (50_000, 500_000, 10_000) if args.quick else (1_000_000, 10_000_000, 100_000)
    work = Path(tempfile.mkdtemp(prefix="meridian-pit-"))
    try:
        db = work / "features.duckdb"
        gen_s, _ = measure_child(
            __file__,
            [
                "--phase",
                "generate",
                "--db",
                str(db),
                "--labels",
                str(labels),
                "--features",
                str(features),
                "--entities",
                str(entities),
            ],
        )
        print(
            f"{labels:,} label rows x {features:,} feature rows in 3 views, {entities:,} entities "
            f"(generated in {gen_s:.1f}s)"
        )
        results = {}
        print(f"{'method':<12} {'retrieval s':>12} {'process s':>10} {'peak RSS MB':>12}")

        def record(method: str, wall: float, peak: float) -> None:
            seconds = float((work / f"{method}.seconds").read_text())
            results[method] = {
                "seconds": round(seconds, 3),
                "process_seconds": round(wall, 2),
                "peak_rss_mb": round(peak),
            }
            print(f"{method:<12} {seconds:>12.2f} {wall:>10.2f} {peak:>12.0f}", flush=True)

        for method in ("asof", "range_join"):
            out = work / f"{method}.parquet"
            record(method, *measure_child(__file__, ["--phase", method, "--db", str(db), "--out", str(out)]))
        if not args.no_feast:
            python = feast_python()
            phase = str(REPO_ROOT / "benchmarks" / "feast_phase.py")
            record("feast", *measure_child(phase, [str(work), str(work / "feast.parquet")], python))
        rows, diff = agree(work / "asof.parquet", work / "range_join.parquet")
        print(f"rows: {rows:,}; rows that differ from the range join: {diff}")
        feast_diff = None
        if "feast" in results:
            _, feast_diff = agree(work / "asof.parquet", work / "feast.parquet")
            print(f"rows that differ from Feast: {feast_diff}")
        print(
            json.dumps(
                {
                    "benchmark": "pit_join",
                    "quick": args.quick,
                    "label_rows": labels,
                    "feature_rows": features,
                    "speedup_vs_range_join": round(
                        results["range_join"]["seconds"] / results["asof"]["seconds"], 2
                    ),
                    "speedup_vs_feast": (
                        round(results["feast"]["seconds"] / results["asof"]["seconds"], 2)
                        if "feast" in results
                        else None
                    ),
                    "rows_differing_from_feast": feast_diff,
                    "peak_rss_mb": results["asof"]["peak_rss_mb"],
                    "rows_differing_from_range_join": diff,
                    "methods": results,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
