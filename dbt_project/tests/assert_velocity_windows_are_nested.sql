-- A longer window can never hold fewer transactions or less spend than a shorter one.
select transaction_id
from {{ ref('customer_spend_features') }}
where {{ test_window_filter('customer_spend_features') | trim or 'true' }}
and not (
    txn_count_1h <= txn_count_24h
    and txn_count_24h <= txn_count_7d
    and txn_count_7d <= txn_count_30d
    and amount_usd_1h <= amount_usd_24h + 1e-6
    and amount_usd_24h <= amount_usd_7d + 1e-6
    and amount_usd_7d <= amount_usd_30d + 1e-6
)
