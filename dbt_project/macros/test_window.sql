{#-
  Tests of a Dagster run judge the days the run built, not the region's whole history:
  a daily run's tests then cost what a day costs, however long the lake grows. With
  min_day/max_day unset (a standalone `dbt build`, or the full-refresh path), every day
  is tested. A model listed here is filtered on its day column, over the days the run
  rebuilt (labelled_events rebuilds label_lookback_days before its window); the others,
  and the `to` side of a relationships test, are read whole.
  This overrides dbt's get_where_subquery, keeping a test's own `where` config as well.
-#}
{% macro test_window_filter(identifier) -%}
  {%- set windowed = {
      'stg_transactions': ('event_day', 0),
      'stg_labels': ('label_day', 0),
      'labelled_events': ('event_day', var('label_lookback_days')),
      'customer_spend_features': ('event_day', 0),
      'merchant_risk_features': ('as_of_day', 0),
  } -%}
  {%- if run_setting('min_day') and run_setting('max_day') and identifier in windowed -%}
    {%- set column, lookback = windowed[identifier] -%}
    {{ column }} between {{ days_before(run_start_day(), lookback) }} and {{ run_end_day() }}
  {%- endif -%}
{%- endmacro %}

{% macro get_where_subquery(relation) -%}
  {%- set clauses = [config.get('where', ''), test_window_filter(relation.identifier) | trim] | select | list -%}
  {%- if clauses -%}
    {%- set filtered -%}
      (select * from {{ relation }} where ({{ clauses | join(') and (') }})) dbt_subquery
    {%- endset -%}
    {%- do return(filtered) -%}
  {%- else -%}
    {%- do return(relation) -%}
  {%- endif -%}
{%- endmacro %}
