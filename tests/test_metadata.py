"""Metadata stays small: the instance's event log stores it on every partition of a ranged run."""

from __future__ import annotations

import base64

from assets.metadata import MAX_INLINE_PNG_BYTES, MAX_TABLE_ROWS, capped_table, png_markdown
from meridian.plots import drift_plot


def test_a_plot_is_inlined_under_the_limit_and_a_larger_one_says_where_it_is():
    rows = [{"column": f"c{i}", "value": i / 50, "status": "warn" if i % 7 else "error"} for i in range(45)]
    png = drift_plot(rows, "a region-day with 45 columns")
    assert png.startswith(b"\x89PNG") and len(png) <= MAX_INLINE_PNG_BYTES  # what the asset draws fits
    inline = png_markdown(png, "drift").value
    assert base64.b64decode(inline.split("base64,")[1].rstrip(")")) == png
    big = png_markdown(png + b"\0" * MAX_INLINE_PNG_BYTES, "drift", "in lake/drift").value
    assert "base64" not in big and "over the 96 KB inline limit; in lake/drift" in big


def test_a_long_table_shows_its_first_rows_and_counts_the_rest():
    rows = [{"n": i} for i in range(MAX_TABLE_ROWS + 7)]
    text = capped_table(rows, "in the lake").value
    assert "| 0 |" in text and f"| {MAX_TABLE_ROWS - 1} |" in text and f"| {MAX_TABLE_ROWS} |" not in text
    assert text.endswith("*7 more rows in the lake*")
    assert "more rows" not in capped_table(rows[:3], "in the lake").value
