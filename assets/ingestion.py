"""Ingestion: one region-day of raw transactions and chargebacks into the region's lake.

A partition is every file delivered to the region's landing zone for that day (the
generator's and users', meridian.landing), validated together and written as one Parquet
file per table, replaced atomically; each file is archived and recorded when first ingested,
so a re-run of a partition reads the same bytes and is idempotent. Rows that fail validation
go to the quarantine table with their reason and file; the reconciliation check proves
accepted + quarantined = delivered for every day and every file.
"""

from collections.abc import Callable, Iterator
from datetime import date

import dagster as dg
import polars as pl

from assets.partitions import (
    DAY_DIMENSION,
    REGION_DAY_PARTITIONS,
    REGION_DIMENSION,
    RegionFailures,
    days_by_region,
)
from meridian import landing
from meridian.lake import sweep_temporaries
from meridian.landing_stores import landing_for
from meridian.report import markdown_table
from meridian.topology import Region
from meridian.validation import (
    CONFLICT_REASON,
    TRANSACTION_IDENTITY,
    ValidatedBatch,
    accepted_conflicts,
    validate_labels,
    validate_transactions,
)
from resources.alerting import AlertingResource
from resources.lake import PartitionWrite, RegionalLakeResource
from resources.source import TransactionSourceResource
from resources.topology import RegionTopologyResource

RECONCILIATION_CHECK = "accepted_plus_quarantined_equals_delivered"
INGESTION_GROUP = "ingestion"
OWNERS = ["team:fraud-data"]


# Delivered rows per lake commit in a ranged run: days are committed together up to this many
# (a 62-day default run is one commit per table; a 500k-rows-a-day backfill one per 2 days).
BATCH_ROWS = 1_000_000


def _ingest(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    source: TransactionSourceResource,
    validate: Callable[[pl.DataFrame, date, Region], ValidatedBatch],
    accepted_key: dg.AssetKey,
    quarantine_key: dg.AssetKey,
    identity: tuple[str, ...] | None,
    alerting: AlertingResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
    topo = topology.load()
    labels = accepted_key.path[-1] == "raw_labels"
    feed = "chargebacks" if labels else "transactions"
    rows: list[dict[str, object]] = []
    files: list[dict[str, object]] = []
    lake_dirs: set[str] = set()
    reasons: dict[str, int] = {}
    swept: list[str] = []
    failures = RegionFailures(context)
    run_days = days_by_region(context)
    for region_name, days in run_days.items():
        with failures.region(region_name):
            region = topo.region(region_name)
            paths = lake.paths(topo, region_name)
            store = landing_for(region_name, paths.root)  # its folder, or its own bucket
            # Temporary files of writers that were killed before renaming them into place.
            for folder in (paths.lake, landing.landing_root(paths.root), landing.state_root(paths.root)):
                for leftover in sweep_temporaries(folder):
                    swept.append(str(leftover.relative_to(paths.root)))
            # Days are validated one by one and committed in batches: a batch's days are one
            # commit per table (all of them or none), then their deliveries are marked ingested.
            pending: list[tuple[str, landing.DayDelivery, landing.DayResult]] = []
            for index, day in enumerate(days):
                served = source.deliver(
                    feed, region, date.fromisoformat(day), store, paths.lake_table("raw_transactions")
                )
                delivery = landing.collect_day(paths.root, feed, day, store)
                if served is not None:  # the generator's file is new: keep what it says beside it
                    key = f"{feed}/{day}/{landing.GENERATOR_FILE}"
                    delivery.manifest[key] = {**delivery.manifest[key], "served_chargebacks": served}
                result = landing.validate_day(
                    delivery, lambda rows, d=day, r=region: validate(rows, date.fromisoformat(d), r), feed
                )
                pending.append((day, delivery, result))
                if index < len(days) - 1 and sum(r.delivered for _, _, r in pending) < BATCH_ROWS:
                    continue
                written = {
                    asset.path[-1]: lake.write_partitions(
                        paths, asset.path[-1], {d: getattr(r, part) for d, _, r in pending}
                    )
                    for asset, part in ((accepted_key, "accepted"), (quarantine_key, "quarantined"))
                }
                for day, delivery, result in pending:
                    landing.commit_day(paths.root, feed, day, delivery)  # the lake holds them: ingested
                    accepted = written[accepted_key.path[-1]][day]
                    quarantined = written[quarantine_key.path[-1]][day]
                    for reason, n in result.reasons().items():
                        reasons[reason] = reasons.get(reason, 0) + n
                    conflicting = result.quarantined.filter(pl.col("reason").str.starts_with(CONFLICT_REASON))
                    if conflicting.height:  # someone sent another payment's content under an id
                        alerting.send(
                            "WARN",
                            region_name,
                            accepted_key.to_user_string(),
                            f"conflicting-ids:{region_name}:{accepted_key.to_user_string()}:{day}",
                            f"{conflicting['transaction_id'].n_unique()} id(s) of {day} were delivered with "
                            "conflicting content; all their copies are quarantined",
                            {
                                "transaction_ids": conflicting["transaction_id"]
                                .unique()
                                .sort()
                                .head(20)
                                .to_list()
                            },
                        )
                    for file in result.files.iter_rows(named=True):
                        files.append({"region": region_name, "day": day, **file})
                    rows.append(
                        _day_row(region_name, day, delivery, result, accepted, quarantined, labels, identity)
                    )
                pending = []
                lake_dirs.add(str(paths.table(accepted_key.path[-1])))
    failures.raise_if_any([accepted_key, quarantine_key], run_days)
    table = pl.DataFrame(rows)
    delivered, n_acc, n_quar = (int(table[c].sum()) for c in ("delivered", "accepted", "quarantined"))
    unbalanced = table.filter(
        (pl.col("accepted") + pl.col("quarantined") != pl.col("delivered"))
        | (pl.col("conflicts_accepted") > 0)
    )
    unbalanced_files = (
        pl.DataFrame(files).filter(pl.col("accepted") + pl.col("quarantined") != pl.col("delivered"))
        if files
        else pl.DataFrame()
    )
    # One output covers every partition of a single-run backfill and Dagster copies its
    # metadata onto each of them, so counts are labelled as whole-run figures there and
    # each partition gets its own figures as an observation.
    scope = "" if len(rows) == 1 else "run_total_"
    if len(rows) > 1:
        for row in rows:
            partition = dg.MultiPartitionKey({REGION_DIMENSION: row["region"], DAY_DIMENSION: row["day"]})
            for key, count in ((accepted_key, row["accepted"]), (quarantine_key, row["quarantined"])):
                yield dg.AssetObservation(
                    asset_key=key,
                    partition=partition,
                    metadata={
                        "rows": count,
                        "delivered": row["delivered"],
                        "day": row["day"],
                        "region": row["region"],
                    },
                )
    yield dg.MaterializeResult(
        asset_key=accepted_key,
        metadata={
            **({"dagster/row_count": n_acc} if len(rows) == 1 else {}),
            f"{scope}accepted": n_acc,
            f"{scope}delivered": delivered,
            f"{scope}quarantined": n_quar,
            f"{scope}bytes": int(table["accepted_bytes"].sum()),
            **({f"{scope}served_chargebacks": int(table["served_chargebacks"].sum())} if labels else {}),
            "partitions_in_run": len(rows),
            "partitions": dg.MetadataValue.md(markdown_table(rows)),
            f"{scope}files": len(files),
            "landing_files": dg.MetadataValue.md(markdown_table(_file_rows_for_ui(files))),
            "lake_tables": dg.MetadataValue.json(sorted(lake_dirs)),
            "leftover_temporaries_removed": len(swept),
            **({"leftovers": dg.MetadataValue.json(swept[:50])} if swept else {}),
        },
    )
    yield dg.MaterializeResult(
        asset_key=quarantine_key,
        metadata={
            **({"dagster/row_count": n_quar} if len(rows) == 1 else {}),
            f"{scope}quarantined": n_quar,
            "quarantine_rate": round(n_quar / delivered, 6) if delivered else 0.0,
            "reasons": dg.MetadataValue.json(reasons),
            "partitions_in_run": len(rows),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=accepted_key,
        check_name=RECONCILIATION_CHECK,
        passed=unbalanced.is_empty() and unbalanced_files.is_empty(),
        metadata={
            "delivered": delivered,
            "accepted": n_acc,
            "quarantined": n_quar,
            "conflicts_accepted": int(table["conflicts_accepted"].sum()),
            "unbalanced_partitions": dg.MetadataValue.json(unbalanced.to_dicts()),
            "unbalanced_files": dg.MetadataValue.json(unbalanced_files.to_dicts()),
        },
    )


def _day_row(
    region: str,
    day: str,
    delivery: landing.DayDelivery,
    result: landing.DayResult,
    accepted: PartitionWrite,
    quarantined: PartitionWrite,
    labels: bool,
    identity: tuple[str, ...] | None,
) -> dict[str, object]:
    """One region-day of the run: what was delivered, and what the lake's commit holds of it."""
    return {
        "region": region,
        "day": day,
        "files": result.files.height,
        "delivered": result.delivered,
        # chargebacks of transactions the scoring service served (labels only)
        **(
            {"served_chargebacks": sum(r.get("served_chargebacks", 0) for r in delivery.manifest.values())}
            if labels
            else {}
        ),
        "accepted": accepted.rows,
        "quarantined": quarantined.rows,
        "accepted_bytes": accepted.bytes,
        # the Delta version of the accepted table that holds this day now
        "lake_version": accepted.version,
        # accepted ids repeated, or delivered in another form: must be 0
        "conflicts_accepted": accepted_conflicts(delivery.rows, result.accepted_with_source, identity),
    }


def _file_rows_for_ui(files: list[dict[str, object]], limit: int = 60) -> list[dict[str, object]]:
    """The delivered files of the run, problems first, as the UI's table shows them."""
    keep = ("region", "day", "key", "status", "delivered", "accepted", "quarantined", "problem")
    ordered = sorted(files, key=lambda f: (f["problem"] is None, f["status"] == "ingested before", f["key"]))
    return [{k: f[k] for k in keep} for f in ordered[:limit]]


def _ingestion_asset(
    name: str,
    accepted: str,
    quarantined: str,
    description: str,
    validate: Callable[[pl.DataFrame, date, Region], ValidatedBatch],
    identity: tuple[str, ...] | None,
) -> dg.AssetsDefinition:
    accepted_key, quarantine_key = dg.AssetKey(accepted), dg.AssetKey(quarantined)
    spec = {
        "group_name": INGESTION_GROUP,
        "owners": OWNERS,
        "kinds": {"parquet", "polars"},
        "tags": {"classification": "personal"},
    }

    @dg.multi_asset(
        name=name,
        specs=[
            dg.AssetSpec(accepted_key, description=description, **spec),
            dg.AssetSpec(
                quarantine_key,
                description=f"Rows of {accepted} that failed validation, with the reason.",
                **spec,
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=accepted_key,
                blocking=True,
                description="Every delivered row is either accepted or quarantined, and no accepted "
                "id is repeated or was delivered with other content (another payment under its id).",
            )
        ],
        partitions_def=REGION_DAY_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        topology: RegionTopologyResource,
        lake: RegionalLakeResource,
        source: TransactionSourceResource,
        alerting: AlertingResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult | dg.AssetObservation]:
        yield from _ingest(
            context, topology, lake, source, validate, accepted_key, quarantine_key, identity, alerting
        )

    return _asset


transactions_ingestion = _ingestion_asset(
    "transactions_ingestion",
    "raw_transactions",
    "quarantined_transactions",
    "Validated card transactions of one region-day, as Parquet in the region's lake: every file "
    "delivered to the region's landing zone for that day (meridian.landing), the generator's included.",
    lambda raw, day, region: validate_transactions(raw, day, region),
    TRANSACTION_IDENTITY,
)
labels_ingestion = _ingestion_asset(
    "labels_ingestion",
    "raw_labels",
    "quarantined_labels",
    "Chargebacks that landed on one region-day, as Parquet in the region's lake: the source's "
    "feed covers what the scoring service served too (meridian.served_labels). Read from every file "
    "delivered to the region's landing zone for that day.",
    lambda raw, day, region: validate_labels(raw, day),
    None,  # a garbled copy of a chargeback does not cost the genuine one: repeats only
)
