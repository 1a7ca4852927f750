-- Typed transactions with amounts normalised to USD, one row per transaction_id.
--
-- A transaction id can reach the lake more than once: the source and the scoring service
-- both deliver it (raw_transactions' origins `source` and `served`), or it arrives
-- on two event days. The lake keeps every copy; this view reconciles them with one rule
-- that no arrival order can change (the same rule validation applies within a batch):
--   * copies that agree on the payment (transaction_identity) are one transaction, and the
--     source's copy is the one kept (it carries the fields the service never sees);
--   * copies that disagree are all left out, and listed in transaction_id_conflicts.
-- A view: filters on event_day still prune the lake's day partitions for the rows read.
-- `not materialized`: DuckDB materializes a CTE read more than once, and `lake` is read three
-- times, so every query of this view (each test, each model) copied every column of every
-- row of the lake first: at 15M rows, 23 GB through the buffer, 5 GB spilled; a one-column
-- not_null test took 8.7 s alone, 27 s in a build (benchmarks/scaling.py at 500k rows a day).
-- Inlined, each reader scans what it needs: 0.6 s alone.
with lake as not materialized (
    select * from {{ source('lake', 'raw_transactions') }}
),

-- The ids held more than once: derived from the lake table by the lake sync, in the same
-- transaction as every load of it (meridian/lake_sync.py DERIVED), so that a query of a few
-- days does not group every id of the lake again. Not a dbt source: it is part of
-- raw_transactions (one Dagster asset), and dagster-dbt gives each source its own asset.
repeated as not materialized (
    select transaction_id
    from lake.raw_transactions_repeated
),

agreeing as (
    select l.transaction_id
    from lake as l
    semi join repeated using (transaction_id)
    group by l.transaction_id
    having count(distinct ({{ transaction_identity('l') }})) = 1
),

-- One row per id that agrees: the source's copy before the service's, then by day and
-- by the fields only the source carries (deterministic whatever the arrival order).
kept as (
    select l.*
    from lake as l
    semi join agreeing using (transaction_id)
    qualify row_number() over (
        partition by l.transaction_id
        order by l.origin = 'served', l.day,
                 l.email nulls last, l.card_fingerprint nulls last, l.device_id nulls last,
                 l.merchant_category nulls last
    ) = 1
),

reconciled as (
    select * from lake anti join repeated using (transaction_id)
    union all by name
    select * from kept
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
from reconciled as t
left join {{ ref('currency_rates') }} as r using (currency)
