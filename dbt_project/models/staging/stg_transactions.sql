-- Typed transactions with amounts normalised to USD, one row per transaction_id.
--
-- A transaction id can reach the lake more than once: the source and the scoring service
-- both deliver it (raw_transactions/day=D/data.parquet and served.parquet), or it arrives
-- on two event days. The lake keeps every copy; this view reconciles them with one rule
-- that no arrival order can change (the same rule validation applies within a batch):
--   * copies that agree on the payment (transaction_identity) are one transaction, and the
--     source's copy is the one kept (it carries the fields the service never sees);
--   * copies that disagree are all left out, and listed in transaction_id_conflicts.
-- A view: filters on event_day still prune the lake's day partitions for the rows read;
-- only the id and identity columns are read across all days, to find the repeated ids.
with lake as (
    select * from {{ source('lake', 'raw_transactions') }}
),

repeated as (
    select transaction_id
    from lake
    group by transaction_id
    having count(*) > 1
),

copies as (
    select
        transaction_id,
        count(distinct ({{ transaction_identity('l') }})) as versions,
        -- the source's file before the service's, then by name: deterministic
        min(case when l.filename like '%served.parquet' then 'z' || l.filename else 'a' || l.filename end) as kept
    from lake as l
    semi join repeated using (transaction_id)
    group by transaction_id
)

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
from lake as t
left join copies as c using (transaction_id)
left join {{ ref('currency_rates') }} as r using (currency)
where c.transaction_id is null
   or (c.versions = 1
       and c.kept = case when t.filename like '%served.parquet' then 'z' || t.filename else 'a' || t.filename end)
