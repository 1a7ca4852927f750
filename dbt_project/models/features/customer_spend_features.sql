{{ config(unique_key='event_day') }}
-- Customer spend and velocity at the moment of each transaction (the transaction
-- itself included: it is known when it is scored). Incremental by day: a run rebuilds
-- the days [start, end] and reads feature_lookback_days of history before them, which
-- is every row any window can reach, so a day built alone equals the full build.
with txns as (
    select transaction_id, customer_id, merchant_id, device_id, event_time, event_day, amount_usd
    from {{ ref('stg_transactions') }}
    where event_day between {{ days_before(run_start_day(), var('feature_lookback_days')) }}
                        and {{ run_end_day() }}
),

windows as (
    select
        transaction_id,
        customer_id,
        event_time,
        event_day,
        amount_usd,
        count(*) over w_1h as txn_count_1h,
        sum(amount_usd) over w_1h as amount_usd_1h,
        count(*) over w_24h as txn_count_24h,
        sum(amount_usd) over w_24h as amount_usd_24h,
        count(*) over w_7d as txn_count_7d,
        sum(amount_usd) over w_7d as amount_usd_7d,
        count(*) over w_30d as txn_count_30d,
        sum(amount_usd) over w_30d as amount_usd_30d,
        count(distinct merchant_id) over w_24h as distinct_merchants_24h,
        count(distinct merchant_id) over w_30d as distinct_merchants_30d,
        count(distinct device_id) over w_30d as distinct_devices_30d,
        count(*) over (
            partition by customer_id, device_id order by event_time
            range between interval {{ var('feature_lookback_days') }} day preceding and current row
        ) = 1 as is_new_device_30d,
        lag(event_time) over (partition by customer_id order by event_time, transaction_id) as previous_event_time
    from txns
    window
        w_1h as (partition by customer_id order by event_time range between interval 1 hour preceding and current row),
        w_24h as (partition by customer_id order by event_time range between interval 24 hour preceding and current row),
        w_7d as (partition by customer_id order by event_time range between interval 7 day preceding and current row),
        w_30d as (partition by customer_id order by event_time range between interval 30 day preceding and current row)
)

select
    transaction_id,
    customer_id,
    event_time,
    event_day,
    amount_usd,
    txn_count_1h,
    round(amount_usd_1h, 4) as amount_usd_1h,
    txn_count_24h,
    round(amount_usd_24h, 4) as amount_usd_24h,
    txn_count_7d,
    round(amount_usd_7d, 4) as amount_usd_7d,
    txn_count_30d,
    round(amount_usd_30d, 4) as amount_usd_30d,
    round(amount_usd / nullif(amount_usd_30d / txn_count_30d, 0), 4) as amount_to_30d_mean_ratio,
    distinct_merchants_24h,
    distinct_merchants_30d,
    distinct_devices_30d,
    is_new_device_30d,
    -- Beyond the lookback the previous transaction is unknown to an incremental run,
    -- so it is unknown (null) in every run.
    case
        when previous_event_time >= event_time - interval {{ var('feature_lookback_days') }} day
        then epoch(event_time - previous_event_time)
    end as seconds_since_previous_txn
from windows
where event_day between {{ run_start_day() }} and {{ run_end_day() }}
