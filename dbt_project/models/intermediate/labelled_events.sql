{{ config(unique_key='event_day') }}
-- Every transaction with the chargeback known for it so far. Chargebacks land up to
-- label_lookback_days after the transaction, so each run also rebuilds that many days
-- before its window; after that a day's labels are final (a full refresh picks up any
-- chargeback that landed later still). `label_matures_at` is when the absence of a
-- chargeback becomes a trustworthy negative: training uses only matured rows.
with txns as (
    select transaction_id, customer_id, merchant_id, event_time, event_day, amount_usd
    from {{ ref('stg_transactions') }}
    where event_day between {{ days_before(run_start_day(), var('label_lookback_days')) }}
                        and {{ run_end_day() }}
),

labels as (
    select transaction_id, chargeback_at, label_day, reason_code
    from {{ ref('stg_labels') }}
    where label_day >= {{ days_before(run_start_day(), var('label_lookback_days')) }}
)

select
    t.transaction_id,
    t.customer_id,
    t.merchant_id,
    t.event_time,
    t.event_day,
    t.amount_usd,
    l.transaction_id is not null as is_fraud,
    l.chargeback_at,
    l.label_day,
    l.reason_code,
    t.event_time + interval {{ var('label_maturity_days') }} day as label_matures_at
from txns as t
left join labels as l using (transaction_id)
