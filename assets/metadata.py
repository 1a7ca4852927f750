"""Metadata helpers every asset module shares: images in markdown (plots) and for MLflow."""

import base64

import dagster as dg


def png_markdown(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def png_image(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png))
