"""Global services: cross-region sharing, the residency audit, the governance catalog, cost.

- `global_merchant_risk` is the one dataset shared across zones: merchant-level fraud
  risk of every region. Each region's extract is made inside its zone from classified
  columns only (meridian.governance.share: personal columns refused, the customer id
  replaced by a keyed hash with the zone's own key), aggregated, and groups with fewer
  distinct customers than the policy's minimum are suppressed before anything is stored
  outside the zone.
- `residency_audit` scans every file under MERIDIAN_HOME and proves that no personal or
  pseudonymous data of zone Z sits outside Z (blocking check).
- `governance_catalog` lists every data asset with owner, regions, zone, classification,
  retention, lineage up and down and its replicas, as a table and a JSON file.
- `cost_report` prices bytes stored, bytes replicated and compute seconds per region and
  per region pair with the rates in regions.yaml.
"""

import json
import os
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from assets.replication import CLASS_UPSTREAM, REPLICA_ASSETS, replication_status
from meridian import governance
from meridian.lake import write_bytes_atomic, write_parquet_atomic
from meridian.paths import region_paths
from meridian.plots import figure_png
from meridian.report import markdown_table
from meridian.run_tags import region_of_run_tags
from meridian.validation import currency_rates
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

GLOBAL_GROUP = "global"
WINDOW_DAYS = 30


# ---------------------------------------------------------------- sharing


def regional_extract(
    paths, region: str, zone: str, key: bytes, policy: governance.Policy, days: int
) -> pl.DataFrame:
    """Inside the region's zone: the rows the global asset may see, pseudonymised."""
    tx_files = sorted(paths.table("raw_transactions").glob("day=*/*.parquet"))
    if not tx_files:
        return pl.DataFrame()
    last_day = max(f.parent.name.removeprefix("day=") for f in tx_files)
    start = (date.fromisoformat(last_day) - timedelta(days=days - 1)).isoformat()
    wanted = [f for f in tx_files if f.parent.name.removeprefix("day=") >= start]
    # Only the classified, shareable columns are read: personal ones never enter memory here.
    tx = pl.concat(
        [
            pl.read_parquet(
                f,
                columns=[
                    "transaction_id",
                    "customer_id",
                    "merchant_id",
                    "merchant_category",
                    "amount",
                    "currency",
                    "event_time",
                ],
            )
            for f in wanted
        ],
        how="vertical_relaxed",
    )
    labels = [
        pl.read_parquet(f, columns=["transaction_id"])
        for f in paths.table("raw_labels").glob("day=*/*.parquet")
    ]
    fraud = (
        pl.concat(labels).unique()
        if labels
        else pl.DataFrame({"transaction_id": []}, schema={"transaction_id": pl.String})
    )
    extract = tx.join(fraud.with_columns(label=pl.lit(1)), on="transaction_id", how="left").with_columns(
        label=pl.col("label").fill_null(0)
    )
    shared = governance.share(extract, policy, key)  # raises on a personal column
    return shared.with_columns(
        region=pl.lit(region), zone=pl.lit(zone), window_start=pl.lit(start), window_end=pl.lit(last_day)
    )


def aggregate_shared(
    extracts: list[pl.DataFrame], rates: dict[str, float], min_group: int
) -> tuple[pl.DataFrame, int]:
    """Merchant-level risk over the pseudonymised extracts; groups under `min_group` customers dropped."""
    frames = [e for e in extracts if not e.is_empty()]
    if not frames:
        return pl.DataFrame(), 0
    rate = pl.DataFrame({"currency": list(rates), "units_per_usd": list(rates.values())})
    grouped = (
        pl.concat(frames, how="vertical_relaxed")
        .join(rate, on="currency", how="left")
        .group_by("region", "zone", "merchant_id", "merchant_category", "window_start", "window_end")
        .agg(
            transactions=pl.len(),
            chargebacks=pl.col("label").sum(),
            distinct_customers=pl.col("customer_id").n_unique(),  # pseudonymised ids
            amount_usd_mean=(pl.col("amount") / pl.col("units_per_usd")).mean().round(2),
        )
        .with_columns(fraud_rate=(pl.col("chargebacks") / pl.col("transactions")).round(5))
    )
    kept = grouped.filter(pl.col("distinct_customers") >= min_group)
    return kept.sort("region", "merchant_id"), grouped.height - kept.height


@dg.asset(
    deps=[
        dg.AssetDep("raw_transactions", partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep("raw_labels", partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name=GLOBAL_GROUP,
    owners=["team:risk-analytics"],
    kinds={"parquet"},
    tags={"meridian/classification": "aggregate"},
    description="Merchant fraud risk across every region (last 30 days): aggregate and public columns "
    "only, computed from pseudonymised per-zone extracts, small groups suppressed.",
)
def global_merchant_risk(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.MaterializeResult:
    topo = topology.load()
    policy = governance.default_policy()
    home = lake.root()
    rates = currency_rates()
    extracts = []
    for region in topo.active_region_names:
        paths = lake.paths(topo, region)
        if not any(paths.table("raw_transactions").glob("day=*/*.parquet")):
            continue  # nothing ingested yet (and no key is created for an empty zone)
        zone = topo.zone_of(region)
        key = governance.zone_key(topo, policy, zone, home)
        extracts.append(regional_extract(paths, region, zone, key, policy, WINDOW_DAYS))
    table, suppressed = aggregate_shared(extracts, rates, policy.min_group_size)
    if table.is_empty():
        raise dg.Failure("no region has transactions yet: run the regional pipeline first")
    # What is stored outside every zone is checked like any transfer would be.
    leaked = policy.zone_bound(table.columns)
    if leaked:
        raise dg.Failure(f"global_merchant_risk would store zone-bound columns {leaked}; refused")
    path = home / "global" / "merchant_risk" / "data.parquet"
    size = write_parquet_atomic(table, path)
    top = table.filter(pl.col("transactions") >= 50).sort("fraud_rate", descending=True).head(10)
    return dg.MaterializeResult(
        metadata={
            "rows": table.height,
            "bytes": size,
            "suppressed_groups": suppressed,
            "min_group_size": policy.min_group_size,
            "by_region": dg.MetadataValue.json(
                {r: int(n) for r, n in table.group_by("region").len().iter_rows()}
            ),
            "column_classification": dg.MetadataValue.json(policy.classify_all(table.columns)),
            "riskiest_merchants": dg.MetadataValue.md(markdown_table(top.to_dicts())),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


# ---------------------------------------------------------------- residency audit

AUDIT_CHECK = "no_zone_bound_data_outside_its_zone"


@dg.asset(
    deps=[*REPLICA_ASSETS, global_merchant_risk],
    group_name=GLOBAL_GROUP,
    owners=["team:privacy"],
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec(
            AUDIT_CHECK,
            asset="residency_audit",
            blocking=True,
            description="No personal or pseudonymous column of zone Z exists in a file outside Z.",
        )
    ],
    description="Scans every file under MERIDIAN_HOME (Parquet, JSONL, SQLite, DuckDB) and proves that no "
    "personal or pseudonymous data of a zone exists outside it. Fails, with an alert, on any finding.",
)
def residency_audit(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
):
    topo = topology.load()
    home = lake.root()
    report = governance.residency_audit(topo, governance.default_policy(), home)
    findings = [
        {"path": f.path, "zone of location": f.location_zone, "problem": f.problem} for f in report.findings
    ]
    if findings:
        alerting.send(
            "ERROR",
            "global",
            "residency_audit",
            "residency-audit",
            f"residency audit: {len(findings)} finding(s), first: {findings[0]['path']}: {findings[0]['problem']}",
            {"findings": findings[:20]},
        )
    out = home / "platform" / "residency_audit.json"
    write_bytes_atomic(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "passed": report.passed,
                "files_scanned": report.files_scanned,
                "bytes_scanned": report.bytes_scanned,
                "by_zone": report.by_zone,
                "personal_values_indexed": report.personal_values_indexed,
                "findings": findings,
            },
            indent=1,
        ).encode(),
        out,
    )
    yield dg.MaterializeResult(
        metadata={
            "passed": report.passed,
            "files_scanned": report.files_scanned,
            "bytes_scanned": report.bytes_scanned,
            "files_with_zone_bound_columns": report.files_with_zone_bound_columns,
            "files_by_zone": dg.MetadataValue.json(report.by_zone),
            "personal_values_indexed": dg.MetadataValue.json(report.personal_values_indexed),
            "findings": dg.MetadataValue.md(markdown_table(findings[:50]) if findings else "none"),
            "report": dg.MetadataValue.path(str(out)),
        }
    )
    yield dg.AssetCheckResult(
        check_name=AUDIT_CHECK,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"findings": len(findings), "first": findings[0]["problem"] if findings else "none"},
    )


# ---------------------------------------------------------------- catalog


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
        files = sorted(lake.paths(topo, region).table(table).glob("*/*.parquet"))
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
    path = lake.root() / "platform" / "governance_catalog.json"
    write_bytes_atomic(
        json.dumps(
            {"at": datetime.now(UTC).isoformat(), "assets": entries, "problems": problems}, indent=1
        ).encode(),
        path,
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
            "path": dg.MetadataValue.path(str(path)),
        }
    )


# ---------------------------------------------------------------- cost


HISTORY_PAGE = 500  # records per query when the cost report pages through the instance's history


def _dir_bytes(path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def replicated_bytes(
    instance: dg.DagsterInstance, regions: list[str], since: float
) -> dict[tuple[str, str], int]:
    """Bytes copied per (source, target) from the replica assets' materializations since `since`,
    every page of them."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for cls in CLASS_UPSTREAM:
        cursor = None
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(f"{cls}_replica"), after_timestamp=since),
                limit=HISTORY_PAGE,
                cursor=cursor,
            )
            for record in page.records:
                meta = record.asset_materialization.metadata if record.asset_materialization else {}
                if "copied_bytes" in meta:
                    pair = (meta["source_region"].value, meta["target_region"].value)
                    out[pair] += int(meta["copied_bytes"].value)
            if not page.has_more:
                break
            cursor = page.cursor
    return out


def compute_seconds(
    instance: dg.DagsterInstance, regions: list[str], since: float
) -> dict[tuple[str, str], float]:
    """Step seconds per (region, asset/step) from the run history since `since`, every page of it."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    cursor = None
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(updated_after=datetime.fromtimestamp(since, UTC)), limit=HISTORY_PAGE, cursor=cursor
        )
        for record in records:
            run = record.dagster_run
            region = region_of_run_tags(run.tags, regions) or "global"
            for step in instance.get_run_step_stats(run.run_id):
                if step.start_time and step.end_time:
                    out[(region, step.step_key)] += step.end_time - step.start_time
        if len(records) < HISTORY_PAGE:
            break
        cursor = records[-1].dagster_run.run_id
    return out


def compute_rate(topo, region: str) -> float | None:
    """USD per vCPU-hour of a region's pool, or of the global services' (regions.yaml global_cost)."""
    if region in {r.name for r in topo.regions}:
        return topo.region(region).cost.compute_vcpu_hour
    return topo.global_cost.compute_vcpu_hour if topo.global_cost else None


@dg.asset(
    deps=[replication_status],
    group_name=GLOBAL_GROUP,
    owners=["team:platform"],
    kinds={"python"},
    description="Bytes stored, bytes replicated between regions and compute seconds per asset and region "
    "(last 30 days of runs), priced with regions.yaml's rates; totals per region and per region pair, "
    "and a plot.",
)
def cost_report(
    context: dg.AssetExecutionContext, topology: RegionTopologyResource, lake: RegionalLakeResource
) -> dg.MaterializeResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topo = topology.load()
    home = lake.root()
    since = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    names = [r.name for r in topo.regions]
    stored = {r.name: _dir_bytes(region_paths(r, home).root) for r in topo.regions}
    pairs = replicated_bytes(context.instance, names, since)
    compute = compute_seconds(context.instance, names, since)
    per_region = []
    for region in topo.regions:
        rates = region.cost
        gb = stored[region.name] / 1e9
        out_bytes = sum(b for (src, _t), b in pairs.items() if src == region.name)
        seconds = sum(s for (r, _step), s in compute.items() if r == region.name)
        row = {
            "region": region.name,
            "role": region.role,
            "stored_gb": round(gb, 4),
            "storage_usd_month": round(gb * rates.storage_gb_month, 6),
            "replicated_out_gb": round(out_bytes / 1e9, 4),
            "transfer_usd": round(out_bytes / 1e9 * rates.transfer_gb, 6),
            "compute_s": round(seconds, 1),
            "compute_usd": round(seconds / 3600 * rates.compute_vcpu_hour, 6),
        }
        row["total_usd"] = round(row["storage_usd_month"] + row["transfer_usd"] + row["compute_usd"], 6)
        per_region.append(row)
    per_pair = [
        {
            "source": src,
            "target": tgt,
            "zone": topo.zone_of(src),
            "replicated_gb": round(b / 1e9, 4),
            "transfer_usd": round(b / 1e9 * topo.region(src).cost.transfer_gb, 6),
        }
        for (src, tgt), b in sorted(pairs.items())
    ]
    per_asset = sorted(
        (
            {
                "region": r,
                "step": step,
                "compute_s": round(s, 1),
                "compute_usd": round(s / 3600 * rate, 6)
                if (rate := compute_rate(topo, r)) is not None
                else None,
            }
            for (r, step), s in compute.items()
        ),
        key=lambda x: -x["compute_s"],
    )
    global_seconds = sum(s for (r, _step), s in compute.items() if r not in names)
    global_rate = compute_rate(topo, "global")
    global_usd = round(global_seconds / 3600 * global_rate, 6) if global_rate is not None else 0.0
    per_region.append(
        {
            "region": "global",
            "role": "global services",
            "stored_gb": round((_dir_bytes(home / "global") + _dir_bytes(home / "platform")) / 1e9, 4),
            "storage_usd_month": 0.0,
            "replicated_out_gb": 0.0,
            "transfer_usd": 0.0,
            "compute_s": round(global_seconds, 1),
            "compute_usd": global_usd,
            "total_usd": global_usd,
        }
    )
    unpriced = (
        []
        if global_rate is not None
        else [f"global compute {global_seconds:.0f} s: no global_cost in regions.yaml"]
    )
    fig, ax = plt.subplots(figsize=(8, 3.2))
    labels = [r["region"] for r in per_region]
    bottom = [0.0] * len(labels)
    for part in ("storage_usd_month", "transfer_usd", "compute_usd"):
        values = [r[part] for r in per_region]
        ax.bar(labels, values, bottom=bottom, label=part.replace("_usd", "").replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("USD")
    ax.set_title("Meridian cost by region (storage per month, transfer and compute over 30 days)")
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = figure_png(fig)
    path = home / "platform" / "cost_report.json"
    doc = {
        "at": datetime.now(UTC).isoformat(),
        "per_region": per_region,
        "per_pair": per_pair,
        "per_asset": per_asset,
        "unpriced": unpriced,
    }
    write_bytes_atomic(json.dumps(doc, indent=1).encode(), path)
    import base64

    return dg.MaterializeResult(
        metadata={
            "total_usd": round(sum(r["total_usd"] for r in per_region), 6),
            "per_region": dg.MetadataValue.md(markdown_table(per_region)),
            "per_region_pair": dg.MetadataValue.md(
                markdown_table(per_pair) if per_pair else "nothing replicated yet"
            ),
            "top_compute_steps": dg.MetadataValue.md(
                markdown_table(per_asset[:15]) if per_asset else "no runs"
            ),
            "plot": dg.MetadataValue.md(
                f"![cost by region](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "unpriced": dg.MetadataValue.json(unpriced),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


governance_job = dg.define_asset_job(
    "global_governance",
    selection=dg.AssetSelection.groups(GLOBAL_GROUP) | dg.AssetSelection.assets("platform_health"),
    description="Shared aggregates, replication status, residency audit, catalog, cost report and "
    "the all-regions health view.",
)


@dg.schedule(
    job=governance_job,
    cron_schedule="30 5 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every morning, after the nightly pipeline and replication.",
)
def daily_governance_schedule():
    return dg.RunRequest()
