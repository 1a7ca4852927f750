"""Shared test helpers: a small regional lake without Dagster, dbt on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from meridian.generator import GeneratorConfig, generate_labels, generate_transactions
from meridian.lake import partition_file, write_parquet_atomic
from meridian.paths import REPO_ROOT, RegionPaths
from meridian.topology import Region
from meridian.validation import validate_labels, validate_transactions

DBT_DIR = REPO_ROOT / "dbt_project"


def write_lake(paths: RegionPaths, region: Region, cfg: GeneratorConfig, days: list[date]) -> None:
    for day in days:
        tx = validate_transactions(generate_transactions(cfg, region, day).rows, day, region.currencies)
        labels = validate_labels(generate_labels(cfg, region, day).rows, day)
        write_parquet_atomic(tx.accepted, partition_file(paths.table("raw_transactions"), day.isoformat()))
        write_parquet_atomic(labels.accepted, partition_file(paths.table("raw_labels"), day.isoformat()))


def day_range(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def dbt(
    args: list[str], dbt_vars: dict[str, object], target: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / "dbt"
    cmd = [
        str(executable),
        *args,
        "--profiles-dir",
        str(DBT_DIR),
        "--project-dir",
        str(DBT_DIR),
        "--target-path",
        str(target),
        "--vars",
        json.dumps(dbt_vars),
    ]
    return subprocess.run(cmd, cwd=DBT_DIR, capture_output=True, text=True, check=False, env=env)


# The regional assets every end-to-end run must materialize, ingestion to features.
REGIONAL_ASSETS = (
    "raw_transactions",
    "quarantined_transactions",
    "raw_labels",
    "stg_transactions",
    "customer_spend_features",
    "merchant_risk_features",
    "labelled_events",
    "customer_spend_view",
    "merchant_risk_view",
)
