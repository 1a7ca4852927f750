"""One region's pipeline, built once per test session and copied to each module that needs it.

The service's tests (tests/test_serving.py) and the failover drills (tests/test_failover.py)
both start from eu-west after the pipeline (landing zone, lake, dbt, feature views, online
store) over the days that train a model; each then trains and goes on in its own copy. The
first worker of the session to ask builds it (14.7 s of CPU) while another asking at the same
moment waits for it; with the suite's workers, the shared folder is the session's temporary
root, beside each worker's own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from meridian.locks import file_lock
from tests.helpers import trainable_days

REGION = "eu-west"
# The views' warm-up, 4 days of matured, full-window labels, and their maturity window.
DAYS = trainable_days(4)
ROWS_PER_DAY = 2000
BUILT = ".pipeline-built"  # written last: a folder without it is a build that died midway


def source_resource():
    from resources.source import TransactionSourceResource

    return TransactionSourceResource(rows_per_day=ROWS_PER_DAY, malformed_rate=0.0, fraud_rate=0.02)


def pipeline_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy (under a new temporary folder named `name`) of a MERIDIAN_HOME holding
    REGION's pipeline over DAYS at ROWS_PER_DAY."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"shared-{REGION}-pipeline"
    with file_lock(shared.with_name(shared.name + ".lock")):
        if not (shared / BUILT).exists():
            shutil.rmtree(shared, ignore_errors=True)
            _build(shared)
            (shared / BUILT).touch()
    copy = tmp_path_factory.mktemp(name) / "home"
    shutil.copytree(shared, copy, symlinks=True, ignore=shutil.ignore_patterns("*.lock", BUILT))
    return copy


def _build(home: Path) -> None:
    from assets.definitions_file import load_definitions_module
    from assets.features import feature_view_assets
    from assets.ingestion import labels_ingestion, transactions_ingestion
    from assets.online import online_features
    from assets.transforms import regional_dbt_models
    from resources.lake import RegionalLakeResource

    key = lambda day: str(dg.MultiPartitionKey({"region": REGION, "day": day}))  # noqa: E731
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MERIDIAN_HOME", str(home))
        result = dg.materialize(
            [
                transactions_ingestion,
                labels_ingestion,
                regional_dbt_models,
                feature_view_assets,
                online_features,
            ],
            resources={
                **load_definitions_module().build_resources("local"),
                "lake": RegionalLakeResource(home=str(home)),
                "source": source_resource(),
            },
            tags={
                ASSET_PARTITION_RANGE_START_TAG: key(DAYS[0]),
                ASSET_PARTITION_RANGE_END_TAG: key(DAYS[-1]),
            },
        )
    assert result.success
