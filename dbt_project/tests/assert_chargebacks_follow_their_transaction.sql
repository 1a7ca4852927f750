-- A chargeback can only land after the transaction it disputes (over the run's days: macros/test_window.sql).
select transaction_id
from {{ ref('labelled_events') }}
where {{ test_window_filter('labelled_events') | trim or 'true' }}
and is_fraud and chargeback_at <= event_time
