"""The request and response documents of the score route; each served region's schema is exact."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from meridian.countries import ISO_COUNTRIES
from meridian.feature_views import feature_views
from meridian.reference_data import CATEGORIES, HISTORY_START, USD_RATES
from meridian.topology import Region
from meridian.validation import (
    MAX_AMOUNT_USD,
    MAX_CLOCK_SKEW,
    MAX_LATENESS,
    check_event_time,
)

VIEWS = {view.name: view for view in feature_views()}


class Transaction(BaseModel):
    """A transaction to score. `transaction_model(region)` narrows currency to the region's.

    Exact, not lenient: a field the schema does not name is refused (422 naming it) rather
    than ignored, so a misspelt optional field (`device` for `device_id`) is not scored as
    absent; the amount is a JSON number (never `true` or `"12.5"`, which pydantic's lax mode
    would turn into 1.0 and 12.5); the event time is an ISO 8601 date-time (never a bare
    number, whose unit lax mode guesses from its size).
    """

    model_config = ConfigDict(extra="forbid")

    transaction_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(
        gt=0, lt=1e9, allow_inf_nan=False, strict=True, description="in `currency`, strictly positive"
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    channel: Literal["pos", "contactless", "ecom"]
    country: Literal[tuple(sorted(ISO_COUNTRIES))] = Field(description="ISO 3166-1 alpha-2")  # type: ignore[valid-type]
    event_time: datetime | None = Field(
        default=None,
        description=f"default: now (UTC); naive = UTC. Accepted from {MAX_LATENESS.days} days back (never "
        f"before the lake's first day, {HISTORY_START}) to {int(MAX_CLOCK_SKEW.total_seconds() // 60)} "
        "minutes ahead of the service's clock",
    )
    device_id: str | None = Field(default=None, max_length=64, description="when known")
    merchant_category: Literal[CATEGORIES] | None = Field(default=None, description="when known")  # type: ignore[valid-type]

    @field_validator("transaction_id", "customer_id", "merchant_id", "device_id")
    @classmethod
    def _text_is_unicode(cls, value: str | None) -> str | None:
        # JSON may escape a lone surrogate ("\\ud800"): not text, and not storable as UTF-8.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("not valid Unicode text (a lone surrogate)") from None
        return value

    @field_validator("event_time", mode="before")
    @classmethod
    def _not_a_number(cls, at: object) -> object:
        # Lax parsing reads a number as Unix time, in seconds or milliseconds by its size.
        if isinstance(at, int | float):
            raise ValueError("must be an ISO 8601 date-time string, not a number")
        return at

    @field_validator("event_time")
    @classmethod
    def _within_the_accepted_window(cls, at: datetime | None) -> datetime | None:
        # Checked at the edge: a time nobody should accept would poison the customer's online
        # row and every stream micro-batch after it (meridian.validation.check_event_time).
        return None if at is None else check_event_time(at)


def transaction_model(region: Region) -> type[Transaction]:
    """The request body of `region`'s score endpoint, as strict as the lake's validation.

    Currencies are the region's; the amount stays under the lake's ceiling
    (MAX_AMOUNT_USD) in whichever of them has the fewest units per USD, so a body the
    schema calls valid is never quarantined when the stream reaches the lake.
    """
    ceiling = MAX_AMOUNT_USD * min(USD_RATES[c] for c in region.currencies)
    return create_model(
        f"Transaction_{region.name.replace('-', '_')}",
        __base__=Transaction,
        currency=(Literal[tuple(region.currencies)], Field(description=f"{region.name}'s currencies")),
        amount=(
            float,
            Field(
                gt=0,
                lt=ceiling,
                allow_inf_nan=False,
                strict=True,
                description=f"in `currency`, strictly positive, under {MAX_AMOUNT_USD:,.0f} USD",
            ),
        ),
    )


class Score(BaseModel):
    request_id: str
    region: str
    transaction_id: str
    score: float
    model_name: str
    model_version: int
    variant: str
    feature_versions: dict[str, str]
    latency_ms: float
    site: str = Field(
        description="the region whose infrastructure answered (the DR region during a failover)"
    )
    features_complete: bool = Field(
        description="the transaction's feature windows are fully covered by the region's history; "
        "false while history is shorter than the views' warm-up (the score uses truncated windows)"
    )
