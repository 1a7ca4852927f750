"""The payment world the platform knows and the generator simulates: currencies and their USD
rates, merchant categories (with the simulated ticket sizes and risk), channels, chargeback
reasons, the kinds of malformed rows injected, the source timestamp format and the first day.

Validation, the scoring service's request schema, the partitions and the seeded generator
read these; the dbt seed `currency_rates` carries the same rates.
"""

from __future__ import annotations

from datetime import date

import numpy as np

# Units of local currency per USD; the dbt seed `currency_rates` carries the same table.
USD_RATES: dict[str, float] = {
    "USD": 1.0,
    "EUR": 0.92,
    "GBP": 0.79,
    "CHF": 0.88,
    "SGD": 1.35,
    "AUD": 1.52,
    "JPY": 150.0,
}
CATEGORIES: tuple[str, ...] = (
    "grocery",
    "dining",
    "fuel",
    "travel",
    "electronics",
    "apparel",
    "digital_goods",
    "jewelry",
    "gaming",
    "pharmacy",
)
# Typical ticket in USD by category (median of a log-normal).
CATEGORY_MEDIAN_USD = np.array([38.0, 27.0, 45.0, 310.0, 240.0, 65.0, 18.0, 420.0, 35.0, 22.0])
HIGH_RISK_CATEGORIES = ("electronics", "digital_goods", "jewelry", "gaming")
# Category drift moves spend towards these (a new online-electronics trend, say).
DRIFTING_CATEGORIES = ("electronics", "digital_goods")
CHANNELS: tuple[str, ...] = ("pos", "contactless", "ecom")
FOREIGN_COUNTRIES: tuple[str, ...] = ("BR", "NG", "RU", "VN", "UA", "MX", "TR")
CHARGEBACK_REASONS: tuple[str, ...] = ("10.4", "10.5", "4837", "4863")
MALFORMED_KINDS: tuple[str, ...] = (
    "null_customer_id",
    "negative_amount",
    "absurd_amount",
    "unparseable_timestamp",
    "future_timestamp",
    "unknown_currency",
    "duplicate_transaction_id",
)
LABEL_MALFORMED_KINDS: tuple[str, ...] = (
    "null_transaction_id",
    "unparseable_timestamp",
    "duplicate_transaction_id",
)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S%.6fZ"
# The first day the simulated payment switch has data for; the day partitions start here too.
HISTORY_START = date(2026, 1, 1)
