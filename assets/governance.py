"""The global services' group, job and schedule.

The assets of the `global` group live one per module:
- `global_merchant_risk` (assets/sharing.py): the one dataset shared across zones:
  merchant-level fraud risk of every region. Each region's extract is made inside its zone
  from classified columns only (meridian.governance.share: personal columns refused, the
  customer id replaced by a keyed hash with the zone's own key), aggregated, and groups
  with fewer distinct customers than the policy's minimum are suppressed before anything
  is stored outside the zone (meridian.sharing).
- `residency_audit` (assets/residency.py) scans every file under MERIDIAN_HOME and proves
  that no personal or pseudonymous data of zone Z sits outside Z (blocking check).
- `governance_catalog` (assets/catalog.py) lists every data asset with owner, regions,
  zone, classification, retention, lineage up and down and its replicas.
- `cost_report` (assets/cost.py) prices bytes stored, bytes replicated and compute seconds
  per region and per region pair with the rates in regions.yaml (meridian.cost).
"""

import dagster as dg

GLOBAL_GROUP = "global"


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
