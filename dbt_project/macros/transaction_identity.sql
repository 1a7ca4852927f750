{#- What makes two lake rows with one transaction_id the same payment: the columns the
    source and the scoring service both deliver (meridian.validation.TRANSACTION_IDENTITY). -#}
{% macro transaction_identity(alias) -%}
  {{ alias }}.customer_id, {{ alias }}.merchant_id, {{ alias }}.amount, {{ alias }}.currency,
  {{ alias }}.event_time, {{ alias }}.channel, {{ alias }}.country
{%- endmacro %}
