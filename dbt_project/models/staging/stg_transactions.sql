-- Typed transactions with amounts normalised to USD. A view: filters on event_day
-- prune the lake's day partitions, so incremental models read only what they need.
select
    t.transaction_id,
    t.customer_id,
    t.merchant_id,
    t.merchant_category,
    t.amount,
    t.currency,
    round(t.amount / r.units_per_usd, 4) as amount_usd,
    timezone('UTC', t.event_time) as event_time,
    cast(t.day as date) as event_day,
    t.channel,
    t.device_id,
    t.country,
    t.email,
    t.card_fingerprint
from {{ source('lake', 'raw_transactions') }} as t
left join {{ ref('currency_rates') }} as r using (currency)
