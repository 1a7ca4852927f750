{#-
  The day window an incremental model (re)builds in this run.
  - Dagster passes min_day/max_day from the partitions of the run.
  - Standalone incremental runs rebuild from the last day already in the table
    (it may have been partial), full builds take every day.
  Models always read `lookback` extra days of history so that a day built alone is
  identical to the same day built in a full run.
-#}
{% macro run_start_day(day_column='event_day') -%}
  {%- if var('min_day', none) -%}
    cast('{{ var("min_day") }}' as date)
  {%- elif is_incremental() -%}
    (select coalesce(max({{ day_column }}), date '1970-01-01') from {{ this }})
  {%- else -%}
    date '1970-01-01'
  {%- endif -%}
{%- endmacro %}

{% macro run_end_day() -%}
  {%- if var('max_day', none) -%}
    cast('{{ var("max_day") }}' as date)
  {%- else -%}
    date '9999-12-31'
  {%- endif -%}
{%- endmacro %}

{% macro days_before(day_expr, days) -%}
  cast({{ day_expr }} - interval {{ days }} day as date)
{%- endmacro %}
