"""Feature views as assets: each view's definition and version, certified per region-day.

A view's version is a hash of its definition and its dbt model's SQL (meridian.feature_store);
it is the asset's code version, so a changed definition shows the view as changed in the
UI. Materializing a partition profiles the view over those days and records the
definition in the region's feature registry, which every dataset built from the view
cites by version.
"""

import json
from collections.abc import Iterator

import dagster as dg
import duckdb

from assets.partitions import REGION_DAY_PARTITIONS, RegionFailures, days_by_region
from assets.transforms import DBT_MANIFEST_PATH  # noqa: F401  (prepared first: view versions come from it)
from meridian.feature_stats import view_profile
from meridian.feature_views import feature_views
from meridian.lake import write_bytes_atomic
from meridian.locks import file_lock
from meridian.report import markdown_table
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

FEATURE_STORE_GROUP = "feature_store"
VIEWS = {view.name: view for view in feature_views()}


def view_asset_key(view_name: str) -> dg.AssetKey:
    return dg.AssetKey(f"{view_name}_view")


@dg.multi_asset(
    name="feature_views",
    specs=[
        dg.AssetSpec(
            view_asset_key(view.name),
            description=f"Feature view `{view.name}` over `{view.source}`, keyed by {view.entity_key}, "
            f"TTL {view.ttl.total_seconds() / 86400:g} days.",
            deps=[dg.AssetKey(view.source)],
            group_name=FEATURE_STORE_GROUP,
            owners=["team:fraud-ml"],
            kinds={"duckdb"},
            code_version=view.version,
            tags={"feature_view": view.name},
            metadata={"feature_view_version": view.version, "entity_key": view.entity_key},
        )
        for view in VIEWS.values()
    ],
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def feature_view_assets(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> Iterator[dg.MaterializeResult]:
    """Profile each selected view over the run's days and register its definition by version."""
    topo = topology.load()
    selected = [v for v in VIEWS.values() if view_asset_key(v.name) in context.selected_asset_keys]
    profiles: dict[str, dict[str, dict[str, object]]] = {v.name: {} for v in selected}
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region, days in run_days.items():
        with failures.region(region):
            paths = lake.paths(topo, region)
            with (
                file_lock(paths.warehouse_lock, shared=True),
                duckdb.connect(str(paths.warehouse), read_only=True) as con,
            ):
                for view in selected:
                    profiles[view.name][region] = view_profile(con, view, days)
            for view in selected:
                registry = paths.table("feature_registry") / view.name / f"{view.version}.json"
                definition = {**view.definition(), "version": view.version}
                write_bytes_atomic(json.dumps(definition, indent=2, sort_keys=True).encode(), registry)
    failures.raise_if_any([view_asset_key(v.name) for v in selected], run_days)
    for view in selected:
        by_region = profiles[view.name]
        features = [{"feature": f.name, "type": f.dtype, "default": f.default} for f in view.features]
        yield dg.MaterializeResult(
            asset_key=view_asset_key(view.name),
            metadata={
                "feature_view_version": view.version,
                "source_model": view.source,
                "features": dg.MetadataValue.md(markdown_table(features)),
                "rows_in_run_window": sum(int(p["rows"]) for p in by_region.values()),
                "profile_by_region": dg.MetadataValue.json(by_region),
            },
        )
