"""Cross-region sharing: each region's pseudonymised extract, made inside its zone, and the merchant-level aggregate."""

from datetime import date, timedelta

import polars as pl

from meridian import governance


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
