"""`residency_audit`: proves that no personal or pseudonymous data of a zone sits outside it (blocking check)."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from assets.governance import GLOBAL_GROUP
from assets.replication import REPLICA_ASSETS
from assets.sharing import global_merchant_risk
from meridian import governance, residency
from meridian.report import markdown_table
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.topology import RegionTopologyResource

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
    with tempfile.TemporaryDirectory(prefix="residency-audit-") as scratch:
        # The platform's bucket, when the global services publish there: audited like home/global.
        published = lake.global_store(topo).download(Path(scratch))
        report = residency.residency_audit(topo, governance.default_policy(), home, published)
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
    store, name = lake.global_store(topo), "platform/residency_audit.json"
    store.write(
        name,
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
            "report": dg.MetadataValue.path(store.url(name)),
        }
    )
    yield dg.AssetCheckResult(
        check_name=AUDIT_CHECK,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"findings": len(findings), "first": findings[0]["problem"] if findings else "none"},
    )
