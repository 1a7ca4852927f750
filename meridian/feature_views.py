"""Meridian's feature views, declared once: the same definitions serve training and scoring."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from meridian.feature_store import Feature, FeatureView, dbt_definition, dbt_project_vars

CUSTOMER_SPEND_FEATURES = (
    Feature("txn_count_1h", "bigint", 0),
    Feature("amount_usd_1h", "double", 0.0),
    Feature("txn_count_24h", "bigint", 0),
    Feature("amount_usd_24h", "double", 0.0),
    Feature("txn_count_7d", "bigint", 0),
    Feature("amount_usd_7d", "double", 0.0),
    Feature("txn_count_30d", "bigint", 0),
    Feature("amount_usd_30d", "double", 0.0),
    Feature("amount_to_30d_mean_ratio", "double", 1.0),
    Feature("distinct_merchants_24h", "bigint", 0),
    Feature("distinct_merchants_30d", "bigint", 0),
    Feature("distinct_devices_30d", "bigint", 0),
    Feature("is_new_device_30d", "boolean", True),
    Feature("seconds_since_previous_txn", "double", None),
)
# A merchant with no history gets the prior fraud rate of the dbt model (merchant_risk_prior_rate).
MERCHANT_RISK_FEATURES = (
    Feature("transactions_30d", "bigint", 0),
    Feature("chargebacks_known_30d", "bigint", 0),
    Feature("merchant_fraud_rate_30d", "double", 0.01),
)


# The history each view's windows reach back over, from the dbt vars that set them:
# feature_lookback_days (the longest window) and label_lookback_days (how late a chargeback lands).
FEATURE_LOOKBACK = timedelta(days=int(dbt_project_vars()["feature_lookback_days"]))
LABEL_LOOKBACK = timedelta(days=int(dbt_project_vars()["label_lookback_days"]))


@cache
def feature_views() -> tuple[FeatureView, ...]:
    """Every feature view, with its source model's dbt definition folded into its version."""
    return (
        FeatureView(
            name="customer_spend",
            source="customer_spend_features",
            entity_key="customer_id",
            event_timestamp="event_time",
            # One row per transaction: rows are created when the transaction happens.
            created_timestamp="event_time",
            features=CUSTOMER_SPEND_FEATURES,
            ttl=timedelta(days=30),
            # 30-day windows (counts, amounts, distinct merchants and devices, new device).
            warmup=FEATURE_LOOKBACK,
            source_sql=dbt_definition("customer_spend_features"),
        ),
        FeatureView(
            name="merchant_risk",
            source="merchant_risk_features",
            entity_key="merchant_id",
            # Valid from the start of as_of_day: it only counts chargebacks landed before then.
            event_timestamp="cast(as_of_day as timestamp)",
            created_timestamp="cast(as_of_day as timestamp)",
            features=MERCHANT_RISK_FEATURES,
            ttl=timedelta(days=2),
            # Chargebacks landed in the last 30 days, for transactions up to 10 days older still.
            warmup=FEATURE_LOOKBACK + LABEL_LOOKBACK,
            source_sql=dbt_definition("merchant_risk_features"),
            # One row per merchant and day, by the model's meridian_unique_combination test.
            unique_key=("merchant_id", "as_of_day"),
        ),
    )
