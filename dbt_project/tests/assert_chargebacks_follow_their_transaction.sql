-- A chargeback can only land after the transaction it disputes.
select transaction_id
from {{ ref('labelled_events') }}
where is_fraud and chargeback_at <= event_time
