{% test meridian_no_rows(model) %}
-- Fails (with the model's severity) on every row of the model: for models that list defects.
select * from {{ model }}
{% endtest %}
