-- Chargebacks as they landed: one per transaction, partitioned by landing day.
-- A chargeback id that landed twice (on two days, or twice in one) is one label: the
-- earliest, whatever order the copies arrived in (a second report of the same fraud
-- says nothing new, and no arrival order may decide which one counts).
select
    transaction_id,
    timezone('UTC', chargeback_at) as chargeback_at,
    cast(day as date) as label_day,
    reason_code
from {{ source('lake', 'raw_labels') }}
qualify row_number() over (
    partition by transaction_id order by chargeback_at, reason_code, day
) = 1
