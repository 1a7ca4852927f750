"""`governance_catalog`: every data asset with owner, regions, zone, classification, retention, lineage and replicas."""

import json
from collections import defaultdict
from datetime import UTC, datetime

import dagster as dg

from assets.governance import GLOBAL_GROUP
from assets.replication_status import replication_status
from meridian import governance
from meridian.lake_tables import DELTA_TABLES
from meridian.report import markdown_table
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource


def _actual_columns(
    topo, lake: RegionalLakeResource, policy: governance.Policy, table: str
) -> set[str] | None:
    """Columns found in the newest file of a lake table in any region (None: not a lake table / none yet)."""
    spec = policy.tables[table]
    if spec.store != "lake" or not spec.columns:
        return None
    found: set[str] = set()
    import pyarrow.parquet as pq

    for region in topo.active_region_names:
        paths = lake.paths(topo, region)
        if table in DELTA_TABLES:  # its newest version's schema, on disk or on the region's bucket
            dataset = paths.lake_table(table).dataset()
            if dataset is not None:
                found |= set(dataset.schema.names) - set(DELTA_TABLES[table])
            continue
        files = sorted(paths.table(table).glob("day=*/*.parquet"))
        if files:
            found |= set(pq.read_schema(files[-1]).names)
    return found or None


def _asset_graph(context: dg.AssetExecutionContext):
    """The whole graph: the code location's (daemon, UI), else the definitions file's (in-process runs)."""
    try:
        return context.repository_def.asset_graph
    except Exception:  # execute_in_process carries no repository (a CheckError): load the file
        from assets.definitions_file import load_definitions_module

        return load_definitions_module().defs.resolve_asset_graph()


@dg.asset(
    deps=[replication_status],
    group_name=GLOBAL_GROUP,
    owners=["team:platform"],
    kinds={"json"},
    description="Every data asset: owner, regions, zone, classification, retention, lineage up and "
    "down, replicas. A table in the UI and platform/governance_catalog.json.",
)
def governance_catalog(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.MaterializeResult:
    topo = topology.load()
    policy = governance.default_policy()
    graph = _asset_graph(context)
    replicas_of = {
        table: f"{spec.replication}_replica"
        for table, spec in policy.tables.items()
        if spec.replication != "none"
    }
    entries, problems = [], []
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        name = key.path[-1]
        table = policy.assets.get(name)
        partitions = node.partitions_def
        regional = partitions is not None
        if table is None and node.group_name not in ("replication",):
            level, columns, retention, owner, store = "n/a (no table)", {}, None, None, None
        elif table is None:
            level, columns, retention, owner, store = "same as source", {}, None, None, "replica"
        else:
            spec = policy.tables[table]
            level, columns = policy.level(spec.columns), policy.classify_all(spec.columns)
            retention, owner, store = spec.retention_days, spec.owner, spec.store
            actual = _actual_columns(topo, lake, policy, table)
            # Feature-view columns (`<view>__<feature>`) are declared by the feature registry.
            undeclared = sorted(c for c in (actual or set()) - set(spec.columns) if "__" not in c)
            if undeclared:
                problems.append(f"{name}: columns in the lake not declared in the policy: {undeclared}")
        owners = list(node.owners) or ([f"team:{owner}"] if owner else [])
        entries.append(
            {
                "asset": key.to_user_string(),
                "group": node.group_name,
                "owners": owners,
                "regions": topo.active_region_names if regional else ["global"],
                "zones": sorted({topo.zone_of(r) for r in topo.active_region_names})
                if regional
                else ["global"],
                "classification": level,
                "columns": columns,
                "retention_days": retention,
                "store": store,
                "upstream": sorted(k.to_user_string() for k in node.parent_keys),
                "downstream": sorted(k.to_user_string() for k in node.child_keys),
                "replicas": (
                    [
                        {"asset": replicas_of[table], "region": r, "dr_region": topo.dr_region(r).name}
                        for r in topo.active_region_names
                    ]
                    if table in replicas_of and regional
                    else []
                ),
                "partitioned_by": type(partitions).__name__ if partitions else None,
            }
        )
    store, name = lake.global_store(topo), "platform/governance_catalog.json"
    store.write(
        name,
        json.dumps(
            {"at": datetime.now(UTC).isoformat(), "assets": entries, "problems": problems}, indent=1
        ).encode(),
    )
    view = [
        {
            "asset": e["asset"],
            "owner": ", ".join(e["owners"]),
            "zone": ", ".join(e["zones"]),
            "classification": e["classification"],
            "retention_days": e["retention_days"] or "",
            "upstream": len(e["upstream"]),
            "downstream": len(e["downstream"]),
            "replica": e["replicas"][0]["asset"] if e["replicas"] else "",
        }
        for e in entries
    ]
    counts = defaultdict(int)
    for e in entries:
        counts[e["classification"]] += 1
    return dg.MaterializeResult(
        metadata={
            "assets": len(entries),
            "by_classification": dg.MetadataValue.json(dict(counts)),
            "catalog": dg.MetadataValue.md(markdown_table(view)),
            "policy_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            "path": dg.MetadataValue.path(store.url(name)),
        }
    )
