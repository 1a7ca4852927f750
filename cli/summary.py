"""The summary table `meridian run` prints: counted from what landed in each region's lake and warehouse."""

from __future__ import annotations

from cli.runs import RegionOutcome
from meridian.paths import RegionPaths, region_paths
from meridian.topology import Topology


def _lake_rows(paths: RegionPaths, table: str, days: list[str]) -> int:
    """Rows the source delivered into `table` on `days` (the service's share is not the run's)."""
    lake_table = paths.lake_table(table)
    where = {"day": days, **({"origin": "source"} if "origin" in lake_table.partition_by else {})}
    rows = lake_table.read(where=where, columns=["day"])
    return 0 if rows is None else rows.height


def _warehouse_rows(paths: RegionPaths, table: str, days: list[str]) -> int | str:
    import duckdb

    from meridian.locks import file_lock

    if not paths.warehouse.exists():
        return "-"
    try:
        with (
            file_lock(paths.warehouse_lock, shared=True),
            duckdb.connect(str(paths.warehouse), read_only=True) as con,
        ):
            query = f"select count(*) from {table} where event_day between ? and ?"
            return con.execute(query, [days[0], days[-1]]).fetchall()[0][0]
    except duckdb.Error:
        return "-"


def landed_counts(paths: RegionPaths, days: list[str]) -> dict[str, int | str]:
    """What the run's days left in the region's lake and warehouse (counted by the region's
    worker once its runs are done, where the lake's libraries are loaded already)."""
    return {
        "transactions": _lake_rows(paths, "raw_transactions", days),
        "quarantined": _lake_rows(paths, "quarantined_transactions", days),
        "chargebacks": _lake_rows(paths, "raw_labels", days),
        "feature_rows": _warehouse_rows(paths, "customer_spend_features", days),
    }


def summarize(outcomes: list[RegionOutcome], days: list[str], topology: Topology) -> list[dict[str, object]]:
    """One row per region, counted from what landed in its lake and warehouse."""
    rows = []
    for o in outcomes:
        counts = o.counts or landed_counts(region_paths(topology.region(o.region)), days)
        rows.append(
            {
                "region": o.region,
                "status": "ok" if o.success else "FAILED",
                "days": len(days),
                **counts,
                "model": f"v{o.captured['model_version']}" if "model_version" in o.captured else "-",
                "test_pr_auc": o.captured.get("test_pr_auc", "-"),
                "test_roc_auc": o.captured.get("test_roc_auc", "-"),
                "promotion": o.captured.get("decision", "-"),
                "champion": f"v{o.captured['champion_version']}" if "champion_version" in o.captured else "-",
                "scored": o.captured.get("run_total_rows", "-"),
                "drift days ok/warn/error": _drift_days(o.captured.get("region_days_by_worst_status")),
                "checks": f"{o.checks_passed} ok / {o.checks_warned} warn / {o.checks_failed} failed",
                "seconds": f"{o.seconds:.1f}",
            }
        )
    return rows


def _drift_days(counts: object) -> str:
    if not isinstance(counts, dict):
        return "-"
    return (
        f"{counts.get('ok', 0) + counts.get('no_data', 0)}/{counts.get('warn', 0)}/{counts.get('error', 0)}"
    )
