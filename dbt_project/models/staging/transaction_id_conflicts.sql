-- Transaction ids the lake holds in more than one form (another payment's content under
-- an id, or one id on two event days): stg_transactions accepts none of their copies.
-- One row per copy, with the lake partition it came from (day and origin); the warn-severity test on this model
-- raises the alert in Dagster, and the region's build goes on.
-- Not materialized: read twice, it would be copied whole first (see stg_transactions).
with lake as not materialized (
    select * from {{ source('lake', 'raw_transactions') }}
),

-- Only an id held more than once can have two forms (the ids the lake sync derives).
conflicted as (
    select transaction_id, count(distinct ({{ transaction_identity('lake') }})) as versions
    from lake
    semi join lake.raw_transactions_repeated using (transaction_id)
    group by transaction_id
    having count(distinct ({{ transaction_identity('lake') }})) > 1
)

select
    l.transaction_id,
    c.versions,
    cast(l.day as date) as event_day,
    timezone('UTC', l.event_time) as event_time,
    'day=' || l.day || '/origin=' || l.origin as lake_partition,
    'conflicting copies of transaction_id (' || c.versions || ' versions): none accepted' as reason
from lake as l
inner join conflicted as c using (transaction_id)
