{#-
  Run-scoped settings: which days this invocation builds (and, in profiles.yml and
  sources.yml, which region's warehouse and lake). A standalone `dbt build` passes them as
  --vars; Dagster passes them as MERIDIAN_DBT_<NAME> environment variables, read only at
  execution. dbt re-parses the whole project whenever its --vars change, so a run's own
  days as vars would cost every Dagster run a full parse (2-3 s); read at execution they
  leave the parse, and dbt's partial parsing, untouched.
-#}
{% macro run_setting(name) -%}
  {%- set value = var(name, none) -%}
  {%- if value is none and execute -%}
    {%- set value = env_var('MERIDIAN_DBT_' ~ (name | upper), '') or none -%}
  {%- endif -%}
  {{- return(value) -}}
{%- endmacro %}

{#-
  The day window an incremental model (re)builds in this run.
  - Dagster passes min_day/max_day from the partitions of the run.
  - Standalone incremental runs rebuild from the last day already in the table
    (it may have been partial), full builds take every day.
  Models always read `lookback` extra days of history so that a day built alone is
  identical to the same day built in a full run.
-#}
{% macro run_start_day(day_column='event_day') -%}
  {%- set min_day = run_setting('min_day') -%}
  {%- if min_day -%}
    cast('{{ min_day }}' as date)
  {%- elif is_incremental() -%}
    (select coalesce(max({{ day_column }}), date '1970-01-01') from {{ this }})
  {%- else -%}
    date '1970-01-01'
  {%- endif -%}
{%- endmacro %}

{% macro run_end_day() -%}
  {%- set max_day = run_setting('max_day') -%}
  {%- if max_day -%}
    cast('{{ max_day }}' as date)
  {%- else -%}
    date '9999-12-31'
  {%- endif -%}
{%- endmacro %}

{% macro days_before(day_expr, days) -%}
  cast({{ day_expr }} - interval {{ days }} day as date)
{%- endmacro %}
