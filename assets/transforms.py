"""dbt transforms: staging, labelled events and feature models, per region's warehouse.

All dbt models share the region × day partitions. The partition picks the region's
DuckDB file and lake, and the run's days become dbt's run-scoped settings (passed as
environment variables: macros/run_window.sql), so a backfill of many days is one
`dbt build` per region (single-run backfill policy).
"""

import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets, get_asset_key_for_model
from pydantic import Field

from assets.partitions import REGION_DAY_PARTITIONS, days_by_region
from meridian.feature_store import dbt_run_env, dbt_sources_newer_than
from meridian.lake import set_aside_unreadable, write_bytes_atomic
from meridian.lake_sync import sync_lake
from meridian.lake_tables import DELTA_TABLES, LakeLocation
from meridian.locks import file_lock
from meridian.paths import REPO_ROOT
from meridian.roots import make_dirs
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource
from resources.warehouse import WarehouseDbtPreparer, WarehouseDbtResource

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
GROUP_BY_FOLDER = {"staging": "staging", "intermediate": "labels", "features": "features"}


def ensure_manifest(project: DbtProject) -> Path:
    """Parse the project under `dagster dev` (models may have changed), when no manifest exists,
    or when a dbt file is newer than it (feature view versions are read from it)."""
    if os.getenv("DAGSTER_IS_DEV_CLI") or dbt_sources_newer_than(project.manifest_path) is not None:
        WarehouseDbtPreparer().prepare(project)
    return project.manifest_path


class MeridianDbtTranslator(DagsterDbtTranslator):
    """Groups dbt assets by layer and marks them as regional warehouse tables."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        if props["resource_type"] == "source":
            return spec
        folder = props["fqn"][1] if len(props["fqn"]) > 2 else ""
        group = "reference" if props["resource_type"] == "seed" else GROUP_BY_FOLDER.get(folder, "transforms")
        if props["name"] == "stg_transactions":
            # The scoring service's transactions land in the same lake table (assets/serving.py).
            spec = spec.merge_attributes(
                deps=[
                    dg.AssetDep(
                        "served_transactions",
                        partition_mapping=dg.MultiToSingleDimensionPartitionMapping("region"),
                    )
                ]
            )
        return spec.replace_attributes(
            group_name=group,
            owners=["team:fraud-data"],
            kinds={"dbt", "duckdb"},
        ).merge_attributes(tags={"layer": group, "partitioned": "region-day"})


def dbt_env(
    region: str, min_day: str | None, max_day: str | None, lake_root: Path | str, warehouse: Path
) -> dict[str, str]:
    """The run-scoped dbt settings of one region's invocation, as dbt reads them from the
    environment (macros/run_window.sql): its days (None: every day), lake (a folder or an
    s3:// URL) and warehouse."""
    return dbt_run_env(
        {
            "region": region,
            "min_day": min_day,
            "max_day": max_day,
            "lake_root": lake_root,
            "warehouse_path": warehouse,
        }
    )


DBT_RUNS_KEPT = 20


def dbt_run_dir(region_root: Path, run_id: str) -> Path:
    """dbt's target and log folder for one run, inside the region's folder.

    dbt's artifacts (compiled SQL, run results, logs) belong to the region that ran
    them, under MERIDIAN_HOME like everything else; the last DBT_RUNS_KEPT are kept.
    """
    runs = region_root / "dbt-runs"
    if runs.exists():
        old = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime)[: -DBT_RUNS_KEPT + 1]
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
    return runs / run_id


PARSE_STATE = "partial_parse.msgpack"


def dbt_target_dir(region_root: Path, run_id: str) -> Path:
    """The run's dbt folder, holding the region's last parse state when there is one.

    dbt re-parses the whole project (2-3 s) unless the partial-parse state it finds was
    made with the same profile; the profile names the region's warehouse, so the state of
    the project's own parse (setup) fits no region and each region keeps its own: the
    state its last run left (`keep_parse_state`). dbt checks every file's checksum against
    it and re-parses what changed, and reads a damaged state as none.
    """
    target = dbt_run_dir(region_root, run_id)
    kept = _kept_parse_state(region_root)
    if kept.exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept, target / PARSE_STATE)
    return target


def keep_parse_state(region_root: Path, target: Path) -> None:
    """Keep the parse state of the run in `target` for the region's next run."""
    state = target / PARSE_STATE
    if state.exists():
        write_bytes_atomic(state.read_bytes(), _kept_parse_state(region_root))


def _kept_parse_state(region_root: Path) -> Path:
    return region_root / "dbt-state" / PARSE_STATE


# The column that places each table's rows on a day of the partition.
DAY_COLUMNS = {
    "stg_transactions": "event_day",
    "stg_labels": "label_day",
    "customer_spend_features": "event_day",
    "labelled_events": "event_day",
    "merchant_risk_features": "as_of_day",
}


def window_row_counts(
    warehouse: Path, tables: Sequence[str], days: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Rows per day of the run's window, per table, read back from the region's warehouse."""
    counts: dict[str, dict[str, int]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for table in tables:
            column = DAY_COLUMNS[table]
            rows = con.execute(
                f"select cast({column} as varchar), count(*) from {table} "
                f"where {column} between ? and ? group by all order by 1",
                [days[0], days[-1]],
            ).fetchall()
            counts[table] = {day: n for day, n in rows}
    return counts


def column_schemas(warehouse: Path, tables: Sequence[str]) -> dict[str, dg.TableSchema]:
    """Each built table's columns and types as the warehouse holds them.

    dagster-dbt's `fetch_column_metadata` would ask the dbt adapter from this process while
    `dbt build` still runs, and DuckDB lets no other process open a file one process writes
    ("Could not set lock on file"): read after the build instead, from the same catalog.
    """
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            "select table_name, column_name, data_type from information_schema.columns "
            "where table_name in (select unnest(?)) order by table_name, ordinal_position",
            [list(tables)],
        ).fetchall()
    columns: dict[str, list[dg.TableColumn]] = {}
    for table, column, data_type in rows:
        columns.setdefault(table, []).append(dg.TableColumn(column, data_type))
    return {table: dg.TableSchema(columns=cols) for table, cols in columns.items()}


def with_window_row_counts(events: list[Any], warehouse: Path, days: Sequence[str]) -> list[Any]:
    """Add the rows each model holds for the run's days, and its columns, to its output metadata."""
    built = [e.output_name for e in events if isinstance(e, dg.Output) and e.output_name in DAY_COLUMNS]
    if not built or not warehouse.exists():
        return events
    counts = window_row_counts(warehouse, built, days)
    schemas = column_schemas(warehouse, built)
    out = []
    for event in events:
        if isinstance(event, dg.Output) and event.output_name in counts:
            by_day = counts[event.output_name]
            extra = {"rows_in_run_window": sum(by_day.values()), "rows_by_day": dg.MetadataValue.json(by_day)}
            if event.output_name in schemas:
                extra["dagster/column_schema"] = schemas[event.output_name]
            if len(days) == 1:
                extra["dagster/row_count"] = sum(by_day.values())
            event = dg.Output(value=None, output_name=event.output_name, metadata={**event.metadata, **extra})
        out.append(event)
    return out


def merge_region_events(
    events_by_region: Mapping[str, list[Any]],
    built_by_some: Callable[[str, list[str]], Any] | None = None,
) -> Iterator[Any]:
    """One Dagster event per dbt node, however many regions the run covered.

    A run over several regions invokes dbt once per region, but Dagster accepts one
    output per asset and one result per check. An output is reported only if every
    region built it (otherwise a region whose model failed would be marked as
    materialized); a check passes only if it passed in every region. An output that
    only some regions built goes to `built_by_some(output_name, regions)`, which reports
    those regions' partitions, so one region's failure never hides another's tables.
    """
    if len(events_by_region) == 1:
        yield from next(iter(events_by_region.values()))
        return
    outputs: dict[str, list[tuple[str, dg.Output]]] = {}
    checks: dict[tuple[dg.AssetKey, str], list[tuple[str, dg.AssetCheckResult]]] = {}
    for region, events in events_by_region.items():
        for event in events:
            if isinstance(event, dg.Output):
                outputs.setdefault(event.output_name, []).append((region, event))
            elif isinstance(event, dg.AssetCheckResult):
                checks.setdefault((event.asset_key, event.check_name), []).append((region, event))
            else:
                yield event
    n_regions = len(events_by_region)
    for name, items in outputs.items():
        if len(items) < n_regions and built_by_some is not None:
            built_by_some(name, [r for r, _ in items])
        if len(items) == n_regions:
            metadata = {
                k: v for k, v in items[0][1].metadata.items() if k not in ("rows_by_day", "dagster/row_count")
            }
            metadata["regions"] = [r for r, _ in items]
            if "rows_in_run_window" in metadata:
                by_region = {r: o.metadata["rows_in_run_window"].value for r, o in items}
                metadata["rows_in_run_window"] = sum(by_region.values())
                metadata["rows_by_region"] = dg.MetadataValue.json(by_region)
            yield dg.Output(value=None, output_name=name, metadata=metadata)
    for (asset_key, check_name), items in checks.items():
        failed = [(r, c) for r, c in items if not c.passed]
        worst = next((c for _, c in failed), items[0][1])
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=check_name,
            passed=not failed,
            severity=worst.severity,
            metadata={**worst.metadata, "failing_regions": [r for r, _ in failed]},
        )


DBT_MANIFEST_PATH = ensure_manifest(dbt_project)


def first_stale_day(warehouse: Path, start_day: str, lake: LakeLocation | None = None) -> str | None:
    """The earliest day before `start_day` whose built rows hold a transaction that is no
    longer in stg_transactions (a copy that disagrees with it arrived later, on another day).

    Such a row would fail the relationships tests and leave the features of that day and of
    every window reaching past it stale; the build then starts from that day instead.
    Given the region's `lake`, the warehouse's copy of it is synced first (the caller holds
    the warehouse's lock), so copies that landed since the last build are seen.
    """
    if not warehouse.exists():
        return None
    try:
        with duckdb.connect(str(warehouse), read_only=lake is None) as con:
            if lake is not None:
                sync_lake(con, lake)
            found = con.execute(
                """
                select min(event_day) from (
                    select event_day, transaction_id from customer_spend_features
                    union all select event_day, transaction_id from labelled_events
                ) as built
                where event_day < cast(? as date)
                  and transaction_id in (select transaction_id from transaction_id_conflicts)
                """,
                [start_day],
            ).fetchone()[0]
    except duckdb.Error:  # a warehouse built before these models existed: nothing to repair
        return None
    return found.isoformat() if found is not None else None


class DbtBuildConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="rebuild every model of the region from every day in its lake (dbt --full-refresh), "
        "not only the run's days: after a change to a model's logic, or to repair a warehouse",
    )


@dbt_assets(
    manifest=DBT_MANIFEST_PATH,
    project=dbt_project,
    dagster_dbt_translator=MeridianDbtTranslator(),
    partitions_def=REGION_DAY_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    name="regional_dbt_models",
)
def regional_dbt_models(
    context: dg.AssetExecutionContext,
    config: DbtBuildConfig,
    dbt: WarehouseDbtResource,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
) -> Iterator[Any]:
    """dbt build of the run's days, one invocation per region against that region's warehouse."""
    topo = topology.load()
    events: dict[str, list[Any]] = {}
    failures: list[str] = []
    for region, days in days_by_region(context).items():
        paths = lake.paths(topo, region)
        make_dirs(paths.root)  # adopts a region never provisioned; never recreates a lost root
        min_day, max_day = days[0], days[-1]
        context.log.info(f"dbt build for {region}, days {days[0]}..{days[-1]}")

        def waiting(region: str = region) -> None:
            context.log.info(f"waiting for the {region} warehouse: another run is writing it")

        with file_lock(paths.warehouse_lock, on_wait=waiting):
            # One unreadable lake file would fail every build of the region: set it aside (a
            # Delta table's: its partition dropped from the table's newest version).
            unreadable = [
                (Path(file), partition["day"], table, why, "dropped from the table's newest version")
                for table in sorted(DELTA_TABLES)
                for partition, file, why in paths.lake_table(table).drop_unreadable_partitions()
            ]
            unreadable += [
                (
                    aside,
                    aside.parent.name.removeprefix("day="),
                    aside.parent.parent.name,
                    why,
                    f"set aside as {aside.name}",
                )
                for aside, why in set_aside_unreadable(paths.lake)
            ]
            for aside, partition, table, why, action in unreadable:
                message = (
                    f"{region}: unreadable lake file {action} ({why}); "
                    f"re-materialize the ingestion of {table} for {partition} to write it again"
                )
                context.log.error(message)
                alerting.send(
                    "ERROR",
                    region,
                    table,
                    f"unreadable-lake-file:{region}:{table}:{partition}",
                    message,
                    {"file": str(aside)},
                )
            stale = first_stale_day(paths.warehouse, days[0], paths.lake_location)
            if stale is not None:
                context.log.warning(
                    f"{region}: rows built for {stale} hold transactions whose id now has conflicting "
                    f"copies in the lake (transaction_id_conflicts); rebuilding from {stale}"
                )
                min_day = stale
            args = ["build"]
            if config.full_refresh:
                # Every day of the lake: the incremental models are rebuilt as a whole.
                args, min_day, max_day = ["build", "--full-refresh"], None, None
                context.log.warning(f"{region}: full refresh, every model rebuilt from every day in the lake")
            started = time.perf_counter()
            target = dbt_target_dir(paths.root, context.run_id)
            invocation = dbt.cli_with_env(
                args,
                dbt_env(region, min_day, max_day, paths.lake_location.uri, paths.warehouse),
                context=context,
                raise_on_error=False,
                target_path=target,
            )
            events[region] = with_window_row_counts(list(invocation.stream()), paths.warehouse, days)
            keep_parse_state(paths.root, target)
            context.log.info(f"dbt build for {region} took {time.perf_counter() - started:.1f}s")
        if not invocation.is_successful():
            failures.append(f"{region}: {invocation.get_error()}")
    run_days = days_by_region(context)

    def report(output_name: str, regions: list[str]) -> None:
        for region in regions:
            for day in run_days[region]:
                context.log_event(
                    dg.AssetMaterialization(
                        asset_key=context.asset_key_for_output(output_name),
                        partition=dg.MultiPartitionKey({"region": region, "day": day}),
                        metadata={"partial_run": "built; dbt failed in another region of the run"},
                    )
                )

    yield from merge_region_events(events, report)
    if failures:
        raise dg.Failure(
            description="dbt build failed for " + "; ".join(failures),
            metadata={"failed_regions": [f.split(":")[0] for f in failures]},
        )


# The dbt models other stages depend on, by their keys in the manifest (not spelled by hand).
STG_TRANSACTIONS = get_asset_key_for_model([regional_dbt_models], "stg_transactions")
LABELLED_EVENTS = get_asset_key_for_model([regional_dbt_models], "labelled_events")
