-- Chargebacks as they landed: one per transaction, partitioned by landing day.
select
    transaction_id,
    timezone('UTC', chargeback_at) as chargeback_at,
    cast(day as date) as label_day,
    reason_code
from {{ source('lake', 'raw_labels') }}
