"""Argument types for the CLI: a value outside its range is argparse's usage error naming the
option and the bound, before any work starts (not a traceback, and not a run that goes ahead
with a negative row count or a malformed share of 1.5)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import date, timedelta


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An int within [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {bound}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def number(
    minimum: float,
    maximum: float | None = None,
    inclusive_minimum: bool = True,
    inclusive_maximum: bool = True,
) -> Callable[[str], float]:
    """A finite float within the bounds (each inclusive unless said otherwise)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value >= minimum if inclusive_minimum else value > minimum
        high_ok = maximum is None or (value <= maximum if inclusive_maximum else value < maximum)
        if not math.isfinite(value) or not low_ok or not high_ok:
            low = f"{'at least' if inclusive_minimum else 'above'} {minimum:g}"
            high = f"{'at most' if inclusive_maximum else 'below'} {maximum:g}" if maximum is not None else ""
            bound = f"{low} and {high}" if high else low
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be finite, {bound}")
        return value

    parse.__name__ = "number"
    return parse


def day(text: str) -> date:
    """A calendar day written YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD): {error}") from None


def window(start: date, days: int, first: date) -> list[str]:
    """The run's days, `days` of them from `start`, as partition keys; ValueError naming the
    problem when a day falls before the partitions' first day `first` (before: a run that
    failed on Dagster's invariant check) or past the calendar's last (before: a traceback)."""
    if start < first:
        raise ValueError(f"--start {start} is before the first day of the partitions, {first}")
    if days > (date.max - start).days + 1:
        raise ValueError(f"--start {start} with --days {days} runs past the calendar's last day, {date.max}")
    return [(start + timedelta(days=i)).isoformat() for i in range(days)]


def names(text: str) -> list[str]:
    """A comma-separated list of names: spaces around each stripped, empty entries and repeats
    dropped (in order), so `eu-west, us-east,` names two regions and `eu-west,eu-west` one, not
    two runs of it; an empty list means the command's default, as an absent option does."""
    return list(dict.fromkeys(p for part in text.split(",") if (p := part.strip())))
