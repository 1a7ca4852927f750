"""Property: whatever the source sends, validation loses no row and lets no bad row through."""

from __future__ import annotations

from datetime import date

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meridian.generator import GeneratorConfig, generate_transactions
from meridian.topology import load_topology
from meridian.validation import validate_transactions

DAY = date(2026, 1, 12)
REGION = load_topology().region("eu-west")
BASE = generate_transactions(GeneratorConfig(rows_per_day=60), REGION, DAY).rows

corruption = st.sampled_from(
    ["customer_id", "merchant_id", "amount", "currency", "event_time", "transaction_id", "channel"]
)
bad_values = {
    "customer_id": st.sampled_from([None, ""]),
    "merchant_id": st.sampled_from([None, ""]),
    "amount": st.sampled_from([None, -1.0, 0.0, float("nan"), 1e15]),
    "currency": st.sampled_from([None, "XXX", "usd", "JPY"]),
    "event_time": st.sampled_from(
        [None, "", "garbage", "2026-01-13T00:00:00.000000Z", "2026-01-11T23:59:59.999999Z"]
    ),
    "transaction_id": st.sampled_from([None, "dup"]),
    "channel": st.sampled_from(["atm", "", "POS"]),
}


@st.composite
def batches(draw):
    edits = draw(st.lists(st.tuples(st.integers(0, BASE.height - 1), corruption), max_size=25))
    rows = BASE.to_dicts()
    for index, column in edits:
        rows[index][column] = draw(bad_values[column])
    return pl.DataFrame(rows, schema=BASE.schema), {i for i, _ in edits}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_every_row_is_accepted_or_quarantined_and_accepted_rows_are_clean(batch):
    rows, edited = batch
    result = validate_transactions(rows, DAY, REGION)
    assert result.accepted.height + result.quarantined.height == rows.height
    assert result.quarantined["reason"].null_count() == 0
    accepted = result.accepted
    assert accepted["transaction_id"].n_unique() == accepted.height
    assert (
        accepted.select(pl.col("customer_id", "merchant_id", "amount", "event_time").null_count())
        .sum_horizontal()
        .item()
        == 0
    )
    assert (accepted["amount"] > 0).all()
    assert accepted["currency"].is_in(list(REGION.currencies)).all()
    assert (accepted["event_time"].dt.date() == DAY).all()
    # A row nobody corrupted is never quarantined (its id is unique in the batch).
    untouched = sorted(set(range(rows.height)) - edited)
    assert set(rows[untouched]["transaction_id"].to_list()) <= set(accepted["transaction_id"].to_list())
