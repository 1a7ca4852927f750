{{ config(unique_key='as_of_day') }}
-- Merchant fraud rate as known at the start of each day: chargebacks that landed in
-- the 30 days before as_of_day over the merchant's transactions in the same window,
-- smoothed towards a prior. A chargeback that lands on day D only counts from D + 1,
-- so no row sees a label that was not yet known.
with bounds as (
    select
        {{ run_start_day('as_of_day') }} as start_day,
        {{ run_end_day() }} as end_day
),

-- Read twice: not materialized, so each reader scans the view with its own filters.
txns as not materialized (
    select transaction_id, merchant_id, event_day
    from {{ ref('stg_transactions') }}
    where event_day between {{ days_before(run_start_day('as_of_day'), var('feature_lookback_days') | int + var('label_lookback_days') | int) }}
                        and {{ run_end_day() }}
),

daily_transactions as (
    select merchant_id, event_day as day, count(*) as n_transactions
    from txns, bounds
    where event_day >= start_day - interval {{ var('feature_lookback_days') }} day
    group by all
),

daily_chargebacks as (
    select t.merchant_id, l.label_day as day, count(*) as n_chargebacks
    from {{ ref('stg_labels') }} as l
    inner join txns as t using (transaction_id)
    cross join bounds
    where l.label_day between start_day - interval {{ var('feature_lookback_days') }} day and end_day
    group by all
),

daily as (
    select
        merchant_id,
        day,
        coalesce(n_transactions, 0) as n_transactions,
        coalesce(n_chargebacks, 0) as n_chargebacks
    from daily_transactions
    full outer join daily_chargebacks using (merchant_id, day)
),

rolled as (
    select
        merchant_id,
        day as as_of_day,
        n_transactions as transactions_on_day,
        coalesce(sum(n_transactions) over w, 0) as transactions_30d,
        coalesce(sum(n_chargebacks) over w, 0) as chargebacks_known_30d
    from daily
    window w as (
        partition by merchant_id order by day
        range between interval {{ var('feature_lookback_days') }} day preceding and interval 1 day preceding
    )
)

select
    merchant_id,
    cast(as_of_day as date) as as_of_day,
    transactions_on_day,
    cast(transactions_30d as bigint) as transactions_30d,
    cast(chargebacks_known_30d as bigint) as chargebacks_known_30d,
    round(
        (chargebacks_known_30d + {{ var('merchant_risk_prior_weight') }} * {{ var('merchant_risk_prior_rate') }})
        / (transactions_30d + {{ var('merchant_risk_prior_weight') }}),
        6
    ) as merchant_fraud_rate_30d
from rolled, bounds
where as_of_day between start_day and end_day
