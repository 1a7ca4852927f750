"""Cross-region sharing: each region's pseudonymised extract, made inside its zone, and the merchant-level aggregate."""

from datetime import date, timedelta

import polars as pl

from meridian import governance


def regional_extract(
    paths, region: str, zone: str, key: bytes, policy: governance.Policy, days: int
) -> pl.DataFrame:
    """Inside the region's zone: the rows the global asset may see, pseudonymised."""
    transactions = paths.lake_table("raw_transactions")
    days_held = sorted({p["day"] for p in transactions.partitions()})
    if not days_held:
        return pl.DataFrame()
    last_day = days_held[-1]
    start = (date.fromisoformat(last_day) - timedelta(days=days - 1)).isoformat()
    # Only the classified, shareable columns are read: personal ones never enter memory here.
    tx = transactions.read(
        where={"day": [d for d in days_held if d >= start]},
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
    labels = paths.lake_table("raw_labels").read(columns=["transaction_id"])
    fraud = (
        labels.unique()
        if labels is not None
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
