"""Metadata helpers every asset module shares: images in markdown (plots), tables, and images for MLflow.

Every materialization's metadata is stored in the instance's event log (SQLite or
PostgreSQL) and copied onto each partition of a ranged run, so it must stay small: a plot
is inlined only under MAX_INLINE_PNG_BYTES, and a table shows at most MAX_TABLE_ROWS rows
and says how many it left out and where the rest is. The full-size artefacts live with
the data (lake tables) and in MLflow.
"""

import base64

import dagster as dg

from meridian.report import markdown_table

MAX_INLINE_PNG_BYTES = 96 * 1024
MAX_TABLE_ROWS = 40


def png_markdown(png: bytes, alt: str, elsewhere: str = "in the MLflow run") -> dg.MarkdownMetadataValue:
    """The plot inline in markdown (the UI renders data URLs), or a note saying where it is
    (`elsewhere`: the default fits plots that are also logged to MLflow)."""
    if len(png) > MAX_INLINE_PNG_BYTES:
        return dg.MetadataValue.md(
            f"*{alt}: {len(png) // 1024} KB, over the {MAX_INLINE_PNG_BYTES // 1024} KB inline limit; "
            f"{elsewhere}*"
        )
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def capped_table(rows: list[dict], elsewhere: str, limit: int = MAX_TABLE_ROWS) -> dg.MarkdownMetadataValue:
    """A markdown table of the first `limit` rows, and how many more there are and where."""
    shown = markdown_table(rows[:limit])
    if len(rows) > limit:
        shown += f"\n\n*{len(rows) - limit} more rows {elsewhere}*"
    return dg.MetadataValue.md(shown)


def png_image(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))
