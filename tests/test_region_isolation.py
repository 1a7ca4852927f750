"""A region's failure in a run over several regions never hides another region's data."""

from __future__ import annotations

from datetime import date

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.definitions_file import load_definitions_module
from assets.ingestion import transactions_ingestion
from meridian.paths import region_paths
from meridian.topology import Region
from resources.lake import RegionalLakeResource
from resources.source import TransactionSourceResource

DAYS = ("2026-01-01", "2026-01-02")


class SwitchDownInEuWest(TransactionSourceResource):
    def transactions(self, region: Region, day: date):
        if region.name == "eu-west":
            raise RuntimeError("eu-west's payment switch is unreachable")
        return super().transactions(region, day)


def test_one_regions_failure_reports_the_other_regions_partitions_and_names_the_failed_one(
    tmp_path, topology
):
    home = tmp_path / "home"
    resources = {
        **load_definitions_module().build_resources("local"),
        "lake": RegionalLakeResource(home=str(home)),
        "source": SwitchDownInEuWest(rows_per_day=200),
    }
    key = lambda region, day: str(dg.MultiPartitionKey({"region": region, "day": day}))  # noqa: E731
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [transactions_ingestion],
            resources=resources,
            instance=instance,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: key("us-east", DAYS[0]),
                ASSET_PARTITION_RANGE_END_TAG: key("eu-west", DAYS[-1]),
            },
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert (
            "eu-west: RuntimeError: eu-west's payment switch is unreachable"
            in failure.step_failure_data.error.message
        )
        us_east = {key("us-east", d) for d in DAYS}
        for asset in ("raw_transactions", "quarantined_transactions"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == us_east, asset
    paths = region_paths(topology.region("us-east"), home)
    assert {p["day"] for p in paths.lake_table("raw_transactions").partitions()} == set(DAYS)
