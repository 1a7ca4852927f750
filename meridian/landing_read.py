"""Reading one delivered file of the landing zone (meridian.landing) into the feed's columns.

Any format and any typing of the file becomes the contract's form: every column as text,
times as UTC in the contract's format, so the files of one day concatenate and validation
parses each value back (and quarantines what does not parse). Nothing is dropped: a file
that cannot be read at all raises UnreadableFile with the reason; a record that cannot be
put in that form (a JSON line that is not an object, a contract column holding a list or an
object, or bytes that are not UTF-8 text) is returned as a reason for its own quarantine row.
A blank line of a CSV file is no record.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl

from meridian.validation import TIMESTAMP_FORMAT


@dataclass(frozen=True)
class Feed:
    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


class UnreadableFile(ValueError):
    pass


def as_contract_text(frame: pl.DataFrame, feed: Feed) -> pl.DataFrame:
    """The feed's columns as text (times in the contract's format), so files of any typing
    concatenate; validation parses them back and quarantines what does not parse."""
    if frame.width == 0:  # an empty file: no rows (a literal would make one)
        return pl.DataFrame(schema=dict.fromkeys(feed.columns, pl.String))
    columns = []
    for name in feed.columns:
        if name not in frame.columns:
            columns.append(pl.lit(None, dtype=pl.String).alias(name))
            continue
        dtype = frame.schema[name]
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            utc = col.dt.convert_time_zone("UTC") if dtype.time_zone else col.dt.replace_time_zone("UTC")
            columns.append(utc.dt.strftime(TIMESTAMP_FORMAT).alias(name))
        elif dtype == pl.Date:
            columns.append(col.dt.strftime("%Y-%m-%dT00:00:00.000000Z").alias(name))
        elif dtype == pl.String:
            columns.append(col)
        elif dtype.is_nested() or dtype == pl.Object:
            columns.append(
                col.map_elements(lambda v: orjson.dumps(v, default=str).decode(), pl.String).alias(name)
            )
        else:
            columns.append(col.cast(pl.String).alias(name))
    return frame.select(columns)


def _read_jsonl(path: Path, columns: tuple[str, ...]) -> tuple[pl.DataFrame, list[str]]:
    """(rows, reasons of lines that are not JSON objects or hold a list or an object in one of
    the feed's `columns`); values as text."""
    rows: list[dict[str, str | None]] = []
    bad: list[str] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1:
                line = line.removeprefix(UTF8_BOM)  # Windows tools start UTF-8 text with one
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                bad.append(f"line {number} is not JSON: {error}")
                continue
            if not isinstance(value, dict):
                bad.append(f"line {number} is a JSON {type(value).__name__}, not an object")
                continue
            nested = [k for k in columns if isinstance(value.get(k), dict | list)]
            if nested:
                kinds = ", ".join(f"{k!r} holds a JSON {_JSON_KIND[type(value[k])]}" for k in nested)
                bad.append(f"line {number}: {kinds}, not a value")
                continue
            rows.append(
                {
                    str(k): None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode()
                    for k, v in value.items()
                }
            )
    if not rows:
        return pl.DataFrame(), bad
    names = list(dict.fromkeys(k for row in rows for k in row))
    return pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String)), bad


UTF8_BOM = b"\xef\xbb\xbf"
_JSON_KIND = {dict: "object", list: "array"}


def _unusable_rows(frame: pl.DataFrame, columns: tuple[str, ...]) -> tuple[pl.DataFrame, list[str]]:
    """A typed file's rows whose feed column holds no single value (a list, an array, a struct)
    or bytes that are not UTF-8 text, taken out with a reason each; the others as they are."""
    problems = []
    for name in columns:
        dtype = frame.schema.get(name)
        if dtype is None:
            continue
        col = pl.col(name)
        if dtype.is_nested():
            what = {pl.List: "a list", pl.Array: "an array", pl.Struct: "a struct"}.get(
                dtype.base_type(), "a nested value"
            )
            problems.append(pl.when(col.is_not_null()).then(pl.lit(f"{name!r} holds {what}, not a value")))
        elif dtype == pl.Binary:
            bad = col.map_batches(_not_utf8, return_dtype=pl.Boolean)
            problems.append(pl.when(bad).then(pl.lit(f"{name!r} holds bytes that are not UTF-8 text")))
    if not problems:
        return frame, []
    why = pl.concat_str(problems, separator="; ", ignore_nulls=True).alias("why")
    marked = frame.with_row_index("row", offset=1).with_columns(why)
    bad = marked.filter(pl.col("why").is_not_null() & (pl.col("why") != ""))
    reasons = [f"row {row}: {reason}" for row, reason in bad.select("row", "why").iter_rows()]
    return marked.filter(pl.col("why").is_null() | (pl.col("why") == "")).drop("row", "why"), reasons


def _not_utf8(values: pl.Series) -> pl.Series:
    """Which byte strings are not UTF-8 text (polars' cast to text fails on the whole column)."""

    def bad(value: bytes | None) -> bool:
        if value is None:
            return False
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    return pl.Series([bad(v) for v in values.to_list()], dtype=pl.Boolean)


def _ragged_line(path: Path, skip: int) -> str:
    """Where a CSV file has more fields than its header: the first such line, for the reason."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        lines = csv.reader(handle)
        for _ in range(skip):
            next(lines, None)
        header = next(lines, [])
        for row in lines:
            if len(row) > len(header):
                return f"line {lines.line_num} has {len(row)} fields, its header {len(header)}"
    return "a line has more fields than its header"


_DUPLICATED = re.compile(r"^(.*)_duplicated_\d+$")


def _header_lines(path: Path) -> int:
    """How many lines precede a comma-separated CSV's header: 1 for a spreadsheet's `sep=,`
    hint line, else 0. Refuse a file separated otherwise (a `sep=;` hint, or a header with no
    comma but another separator): read as the contract's comma-separated file it would be one
    column, or fail on a ragged line, and every row would be quarantined for a reason that does
    not say why."""
    with open(path, "rb") as handle:
        first = handle.readline(64 * 1024)
        hint = first.removeprefix(UTF8_BOM).strip()
        skip = 0
        if hint.lower().startswith(b"sep=") and len(hint) == 5:
            if hint[4:] != b",":
                raise UnreadableFile(
                    f"unreadable csv file: its first line declares the separator {hint[4:].decode('latin-1')!r}, "
                    "not ','"
                )
            skip, first = 1, handle.readline(64 * 1024)
    if b"," in first:
        return skip
    for separator, name in ((b";", "';'"), (b"\t", "a tab"), (b"|", "'|'")):
        if separator in first:
            raise UnreadableFile(f"unreadable csv file: its header is separated by {name}, not by ','")
    return skip


def read_file(path: Path, feed: Feed) -> tuple[pl.DataFrame, list[str]]:
    """The rows of a delivered file as they are typed in it, and the reasons of the records
    that cannot be read as `feed`'s (each for a quarantine row of its own).

    Raises UnreadableFile when nothing of it can be read (corrupt, wrong encoding, not the format
    its name says, a CSV line with more fields than the header, a header naming one of the
    feed's columns twice).
    """
    suffix = path.suffix.lower()
    skip = 0
    try:
        if suffix == ".parquet":
            frame, bad = _unusable_rows(pl.read_parquet(path), feed.columns)
        elif suffix == ".csv":
            empty = path.stat().st_size == 0
            skip = 0 if empty else _header_lines(path)
            frame = (
                pl.DataFrame()
                if empty
                else pl.read_csv(path, infer_schema=False, raise_if_empty=False, skip_rows=skip)
            )
            if frame.width:  # a blank line is no record (read as a row of nulls)
                frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
            twice = sorted(
                {m[1] for c in frame.columns if (m := _DUPLICATED.match(c)) and m[1] in feed.columns}
            )
            if twice:
                raise UnreadableFile(f"unreadable csv file: its header names {twice} more than once")
            bad = []
        else:
            frame, bad = _read_jsonl(path, feed.columns)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if suffix == ".csv" and "more fields than defined" in first:
            first = _ragged_line(path, skip)
        raise UnreadableFile(f"unreadable {suffix[1:]} file: {first[:300]}") from error
    # Spreadsheet exports pad their headers (" amount"): a padded name is the column it names,
    # unless the file also has that column.
    padded = {c: c.strip() for c in frame.columns if c != c.strip() and c.strip() not in frame.columns}
    return frame.rename(padded), bad
