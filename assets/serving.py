"""Serving in the graph: the deployment config the scoring service follows, and the
micro-batches that bring what it served back into the lake.

`deployment_config` (per region) writes `regions/<r>/deployment/config.json`, which the
service re-reads within its poll interval: champion only, an A/B split, a canary step of
a ramp, or shadow (meridian.deployment). Launch it from the UI with a config, e.g.
{"strategy": "canary", "canary_step": 1} for the ramp's second step.

`served_transactions` and `scoring_decisions` (per region) read the part of the region's
stream log (meridian.stream_log) not yet consumed and merge it into the lake:
transactions into the Delta table `raw_transactions`, partition day=D/origin=served (by
event day, validated like the source's; rejected rows into `quarantined_transactions`'s), so the
next dbt run of day D computes features with them; decisions into
`scoring_decisions/day=D/data.parquet` (by the day they were served). The sensor
`serving_stream_sensor` launches them when the log has grown. Each file is merged (an
identical copy once; copies of an id that disagree are kept for dbt's stg_transactions to
reconcile, never decided by arrival) and replaced atomically, and the consumed offsets
are written last: a run that dies midway is re-done by the next one with the same
result. Entries that are no valid decision + transaction (meridian.served) go to
`quarantined_stream_entries` with their position and reason; the stream moves past them.
"""

import json
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from assets.partitions import REGION_PARTITIONS
from assets.promotion import fraud_model_promotion
from meridian import deployment, dr, registry
from meridian.lake import partition_file, write_bytes_atomic, write_parquet_atomic
from meridian.lake import set_aside as set_aside_file
from meridian.locks import file_lock
from meridian.paths import RegionPaths
from meridian.report import markdown_table
from meridian.served import served_rows
from meridian.stream_log import read_batch, stream_dir
from meridian.validation import CONFLICT_REASON, PROVENANCE, TRANSACTION_IDENTITY, validate_transactions
from resources.alerting import AlertingResource
from resources.lake import RegionalLakeResource
from resources.mlflow import MlflowTrackingResource
from resources.topology import RegionTopologyResource

SERVING_GROUP = "serving"
DECISIONS_TABLE = "scoring_decisions"
# Log entries that are no valid decision + transaction (by the day they were consumed).
STREAM_QUARANTINE_TABLE = "quarantined_stream_entries"
SERVED_PROVENANCE = "scoring-service stream log"


class DeploymentSettings(dg.Config):
    strategy: str = Field(default="champion", description="champion | ab | canary | shadow")
    challenger_weight: float = Field(
        default=0.1, ge=0, le=1, allow_inf_nan=False, description="ab: the challenger's share of customers"
    )
    canary_ramp: list[int] = Field(
        default_factory=lambda: list(deployment.DEFAULT_RAMP), description="canary: percent per step"
    )
    canary_step: int = Field(default=0, ge=0, description="canary: index into the ramp")
    experiment_id: str | None = Field(
        default=None, description="default: region-strategy-versions; a new id reshuffles assignment"
    )


@dg.asset(
    partitions_def=REGION_PARTITIONS,
    deps=[fraud_model_promotion],
    group_name=SERVING_GROUP,
    owners=["team:fraud-ml"],
    kinds={"json"},
    description="Which registered model answers the region's requests: champion, A/B, canary step or "
    "shadow. The scoring service follows it within its poll interval.",
)
def deployment_config(
    context: dg.AssetExecutionContext,
    config: DeploymentSettings,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    mlflow_tracking: MlflowTrackingResource,
) -> dg.MaterializeResult:
    region = context.partition_key
    lake.paths(topology.load(), region)
    mlflow_tracking.preflight()
    client = mlflow_tracking.client()
    name = registry.model_name(region)
    champion = registry.alias_version(client, name, registry.CHAMPION)
    challenger = registry.alias_version(client, name, registry.CHALLENGER)
    if champion is None:
        raise dg.Failure(f"{name} has no champion: train and promote a model before deploying")
    if config.strategy != "champion" and challenger is None:
        raise dg.Failure(
            f"strategy {config.strategy!r} needs a challenger, and {name} has none "
            "(a promoted challenger becomes the champion; train a new one)"
        )
    experiment = config.experiment_id or (
        f"{region}-{config.strategy}-v{champion}"
        + (f"-v{challenger}" if config.strategy != "champion" else "")
    )
    try:
        settings = deployment.DeploymentConfig(
            region=region,
            strategy=config.strategy,
            experiment_id=experiment,
            challenger_weight=config.challenger_weight if config.strategy == "ab" else 0.0,
            canary_ramp=tuple(config.canary_ramp),
            canary_step=config.canary_step,
            champion_version=champion,
            challenger_version=challenger if config.strategy != "champion" else None,
        )
    except ValueError as error:
        raise dg.Failure(f"invalid deployment config for {region}: {error}") from error
    try:
        # Synchronous class: the DR region holds the config before the region serves it.
        path = dr.publish_deployment(topology.load(), lake.root(), region, settings)
    except (OSError, dr.FailoverError, KeyError) as error:
        raise dg.Failure(f"deployment config of {region} not written: the DR copy failed: {error}") from error
    previous = context.instance.get_latest_materialization_event(context.asset_key)
    context.log.info(f"{region}: {settings.strategy}, challenger share {settings.challenger_share:.0%}")
    ramp = [
        {"step": i, "challenger_percent": p, "current": "◀" if i == settings.canary_step else ""}
        for i, p in enumerate(settings.canary_ramp)
    ]
    return dg.MaterializeResult(
        metadata={
            "strategy": settings.strategy,
            "experiment_id": settings.experiment_id,
            "challenger_share": settings.challenger_share,
            "champion_version": champion,
            "challenger_version": dg.MetadataValue.int(challenger) if challenger else "none",
            "canary_ramp": dg.MetadataValue.md(markdown_table(ramp))
            if settings.strategy == "canary"
            else "not a canary",
            "config_path": dg.MetadataValue.path(str(path)),
            "config": dg.MetadataValue.json(json.loads(settings.model_dump_json())),
            "replaces_materialization": previous.run_id if previous else "none",
        }
    )


# ---------------------------------------------------------------- stream → lake


def _offsets_path(paths: RegionPaths):
    return paths.root / "stream" / "offsets.json"


def _merge(path, new: pl.DataFrame, key: list[str], sort: str, set_aside: list[str] | None = None) -> int:
    """Existing file ∪ new rows, first occurrence of each key kept, replaced atomically.

    An existing file that cannot be read (truncated by a storage fault) would fail every
    later micro-batch: it is renamed aside (`<name>.unreadable-<utc>`, outside every glob
    of the lake), named in `set_aside`, and the merge goes on with the new rows.
    """
    existing = None
    if path.exists():
        try:
            existing = pl.read_parquet(path)
        except Exception as error:  # polars raises ComputeError / OSError variants
            aside = set_aside_file(path)
            if set_aside is not None:
                set_aside.append(f"{aside}: {type(error).__name__}: {str(error)[:200]}")
    # diagonal: a file written before a column was added gets nulls in it, not an error
    frame = pl.concat([existing, new], how="diagonal_relaxed") if existing is not None else new
    frame = frame.unique(subset=key, keep="first", maintain_order=True).sort(sort)
    write_parquet_atomic(frame, path)
    return frame.height


def _merge_served(table, day: str, new: pl.DataFrame, key: list[str], sort: str, set_aside: list[str]) -> int:
    """The lake's served share of `day` (origin `served` of a Delta table) ∪ new rows, first
    occurrence of each key kept, replaced in one commit. Only this asset writes that share,
    under the micro-batch lock; the source's share of the day is another partition.

    A share whose file cannot be read (truncated by a storage fault) would fail every later
    micro-batch: its partition is dropped from the table (the file kept, named in
    `set_aside`) and the merge goes on with the new rows."""
    try:
        existing = table.read(where={"day": day, "origin": "served"})
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        dropped = table.drop_unreadable_partitions()
        if not dropped:
            raise
        set_aside.extend(f"{file} ({type(error).__name__}): {why}"[:300] for _, file, why in dropped)
        existing = None
    if existing is not None:
        existing = existing.drop(table.partition_by)
    frame = (
        pl.concat([existing, new], how="diagonal_relaxed")
        if existing is not None and existing.height
        else new
    )
    frame = frame.unique(subset=key, keep="first", maintain_order=True).sort(sort)
    table.replace(frame, day=day, origin="served")
    return frame.height


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "served_transactions",
            group_name=SERVING_GROUP,
            owners=["team:fraud-data"],
            kinds={"parquet"},
            description="Transactions the scoring service served, merged into the region's "
            "raw_transactions lake table (origin `served` of each event day) for the next dbt run.",
        ),
        dg.AssetSpec(
            DECISIONS_TABLE,
            group_name=SERVING_GROUP,
            owners=["team:fraud-ml"],
            kinds={"parquet"},
            description="Every scoring response (variant, model version, score, shadow score, "
            "latency, feature versions) by day served, for A/B analysis and monitoring.",
        ),
    ],
    partitions_def=REGION_PARTITIONS,
    can_subset=False,
)
def serving_stream(
    context: dg.AssetExecutionContext,
    topology: RegionTopologyResource,
    lake: RegionalLakeResource,
    alerting: AlertingResource,
):
    topo = topology.load()
    region = topo.region(context.partition_key)
    paths = lake.paths(topo, region.name)
    offsets_file = _offsets_path(paths)
    with file_lock(paths.root / "stream" / ".microbatch.lock"):
        offsets = json.loads(offsets_file.read_text()) if offsets_file.exists() else {}
        batch = read_batch(stream_dir(paths.root), offsets)
        served = served_rows(batch)
        decisions, transactions = served.decisions, served.transactions
        per_day: list[dict[str, object]] = []
        set_aside: list[str] = []
        quarantined_total = 0
        for (day,), group in transactions.group_by("day", maintain_order=True):
            checked = validate_transactions(group.drop("day"), date.fromisoformat(day), region)
            # The service's copy of a payment the source also delivers stays beside it: dbt's
            # stg_transactions reconciles the copies (meridian.validation's rule), so neither
            # arrival order nor which side came first decides anything.
            accepted, quarantined = checked.accepted, checked.quarantined
            held = _merge_served(
                paths.lake_table("raw_transactions"),
                day,
                accepted,
                ["transaction_id", *TRANSACTION_IDENTITY],
                "event_time",
                set_aside,
            )
            if quarantined.height:
                _merge_served(
                    paths.lake_table("quarantined_transactions"),
                    day,
                    # Where the rows came from, as the source's quarantined rows say it (their file).
                    quarantined.with_columns(pl.lit(SERVED_PROVENANCE).alias(PROVENANCE)),
                    ["transaction_id", "reason"],
                    "transaction_id",
                    set_aside,
                )
                conflicting = quarantined.filter(pl.col("reason").str.starts_with(CONFLICT_REASON))
                if conflicting.height:
                    alerting.send(
                        "WARN",
                        region.name,
                        "served_transactions",
                        f"conflicting-ids:{region.name}:served:{day}",
                        f"the service logged {conflicting['transaction_id'].n_unique()} id(s) of {day} with "
                        "conflicting content; all their copies are quarantined",
                        {"transaction_ids": conflicting["transaction_id"].unique().sort().head(20).to_list()},
                    )
            quarantined_total += quarantined.height
            per_day.append(
                {
                    "event_day": day,
                    "new_rows": group.height,
                    "accepted": accepted.height,
                    "quarantined": quarantined.height,
                    "served_rows_in_lake": held,
                }
            )
        if served.quarantined.height:
            today = datetime.now(UTC).date().isoformat()
            _merge(
                partition_file(paths.table(STREAM_QUARANTINE_TABLE), today),
                served.quarantined,
                ["segment", "byte_offset"],
                "byte_offset",
                set_aside,
            )
        decision_days = []
        for (day,), group in decisions.group_by("day", maintain_order=True):
            held = _merge(
                partition_file(paths.table(DECISIONS_TABLE), day),
                group.drop("day"),
                ["request_id"],
                "served_at",
                set_aside,
            )
            decision_days.append(
                {"served_day": day, "new_decisions": group.height, "decisions_in_lake": held}
            )
        if set_aside:
            alerting.send(
                "ERROR",
                region.name,
                "served_transactions",
                f"unreadable-lake-file:{region.name}",
                f"{len(set_aside)} unreadable lake file(s) set aside; the stream log still holds their entries",
                {"files": set_aside[:20]},
            )
        # Last: once this lands, the entries above count as consumed.
        new_offsets = batch.offsets
        write_bytes_atomic(json.dumps(new_offsets, indent=1, sort_keys=True).encode(), offsets_file)
    entries = batch.entries
    reasons = (
        served.quarantined.group_by("reason").len().sort("len", descending=True).head(20).to_dicts()
        if served.quarantined.height
        else []
    )
    variants = (
        decisions.group_by("variant", "model_version").len().sort("variant").to_dicts()
        if decisions.height
        else []
    )
    yield dg.MaterializeResult(
        asset_key="served_transactions",
        metadata={
            "new_entries": len(entries) + len(batch.bad),
            "unparseable_lines": len(batch.bad),
            "entries_quarantined": served.quarantined.height,
            "entries_quarantined_reasons": dg.MetadataValue.md(
                markdown_table(reasons) if reasons else "none"
            ),
            "quarantined": quarantined_total,
            "unreadable_files_set_aside": dg.MetadataValue.json(set_aside),
            "per_event_day": dg.MetadataValue.md(markdown_table(per_day) if per_day else "nothing new"),
            "stream_offsets": dg.MetadataValue.json(new_offsets),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DECISIONS_TABLE,
        metadata={
            "new_decisions": decisions.height,
            "per_served_day": dg.MetadataValue.md(
                markdown_table(decision_days) if decision_days else "nothing new"
            ),
            "by_variant": dg.MetadataValue.md(markdown_table(variants) if variants else "nothing new"),
        },
    )


serving_stream_job = dg.define_asset_job(
    "serving_stream_microbatch",
    selection=dg.AssetSelection.assets(serving_stream),
    partitions_def=REGION_PARTITIONS,
    description="Merge what the scoring service logged into the region's lake.",
)


def _stream_bytes(paths: RegionPaths) -> tuple[int, int]:
    """(bytes in the region's stream log, bytes already consumed)."""
    directory = stream_dir(paths.root)
    total = sum(p.stat().st_size for p in directory.glob("*.jsonl")) if directory.exists() else 0
    offsets_file = _offsets_path(paths)
    consumed = sum(json.loads(offsets_file.read_text()).values()) if offsets_file.exists() else 0
    return total, consumed


@dg.sensor(
    job=serving_stream_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Micro-batches each region's serving stream log into its lake when it has grown.",
)
def serving_stream_sensor(
    context: dg.SensorEvaluationContext, topology: RegionTopologyResource, lake: RegionalLakeResource
):
    topo = topology.load()
    for name in topo.active_region_names:
        if down := dr.site_down(topo, lake.root(), name):
            context.log.warning(f"{name}: no micro-batch run while its storage is down: {down}")
            continue
        total, consumed = _stream_bytes(lake.paths(topo, name))
        if total > consumed:
            # One request per log size: a tick that sees the same backlog does not launch twice.
            yield dg.RunRequest(run_key=f"{name}-{total}", partition_key=name, tags={"meridian/region": name})
        else:
            context.log.debug(f"{name}: stream log fully consumed ({consumed} bytes)")
