{% test meridian_probability(model, column_name) %}
-- Fails on every row whose value is not a probability in [0, 1].
select {{ column_name }} from {{ model }}
where {{ column_name }} is null or {{ column_name }} < 0 or {{ column_name }} > 1
{% endtest %}
