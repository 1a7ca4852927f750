{% test meridian_unique_combination(model, columns) %}
-- Fails on every combination of `columns` that appears more than once.
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
