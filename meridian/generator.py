"""Deterministic, seeded generator of regional card transactions and late chargebacks.

It stands in for the upstream payment switch: the same (seed, region, day) always
yields the same rows, on any machine. Fraud comes from a separate random stream per
day, so the chargebacks that land on day D (for frauds of earlier days) are rebuilt
by regenerating only the fraud streams of the last `max_chargeback_delay_days` days,
never by re-reading the lake.

The fraud mechanism is learnable by good features: stolen-card bursts (several
transactions within minutes), at compromised or high-risk merchants, from a device the
customer has never used, often e-commerce, often from abroad, with larger amounts.

The world it simulates (currencies, categories, channels, the first day) is
meridian.reference_data, which validation and the service read too; the verdict on what
the scoring service served is meridian.served_labels, by the same parameters.

Its configuration, random streams, populations and the fraud mechanism's parameters are
meridian.payment_world.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from meridian import reference_data as ref
from meridian.payment_world import (
    CHARGEBACK_DELAY_P,
    FRAUD_ABROAD,
    FRAUD_AMOUNT_FACTOR,
    FRAUD_AMOUNT_SIGMA,
    FRAUD_AT_COMPROMISED,
    FRAUD_ECOM,
    FRAUD_NEW_DEVICE,
    LEGIT_ABROAD,
    LEGIT_AMOUNT_SIGMA,
    LEGIT_CHANNEL_P,
    LEGIT_SECOND_DEVICE,
    GeneratorConfig,
    Population,
    mix64,
    population,
    stream_rng,
    transaction_ids,
)
from meridian.topology import Region

_LEGIT, _FRAUD, _MALFORMED, _LABEL_MALFORMED = 0, 1, 2, 3


@dataclass(frozen=True)
class GeneratedBatch:
    """One region-day as the source delivers it, plus what the generator injected."""

    rows: pl.DataFrame
    injected_malformed: dict[str, int] = field(default_factory=dict)
    # Chargebacks among `rows` for transactions the scoring service served (labels only).
    served_chargebacks: int = 0

    @property
    def injected_total(self) -> int:
        return sum(self.injected_malformed.values())


def _utc_offset_seconds(region: Region, day: date) -> float:
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(region.timezone))
    offset = noon.utcoffset() or timedelta(0)
    return offset.total_seconds()


def _seconds_of_day(
    rng: np.random.Generator, pop: Population, region: Region, day: date, n: int
) -> np.ndarray:
    """UTC seconds of the day of `n` events drawn by the region's local hour of activity.

    The offset's whole hours shift the hour, and what is left of it (the half hour of
    India's +05:30, the 45 minutes of Nepal's) the seconds; before, the offset was rounded to
    whole hours, and a region in such a zone had its daily cycle up to 30 minutes off."""
    offset = _utc_offset_seconds(region, day)
    whole_hours = int(offset // 3600)
    local_hour = rng.choice(24, n, p=pop.local_hour_weights)
    utc_hour = (local_hour - whole_hours) % 24
    seconds = utc_hour * 3600.0 + rng.uniform(0, 3600, n)
    rest = offset - whole_hours * 3600  # in [0, 3600): 0 in whole-hour zones, the seconds unchanged
    return (seconds - rest) % 86_400 if rest else seconds


def _timestamps(day: date, seconds: np.ndarray) -> pl.Series:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    micros = np.minimum(seconds, 86_400 - 1e-6) * 1e6
    epoch_micros = int(start.timestamp() * 1e6) + micros.astype(np.int64)
    return pl.Series("event_time", epoch_micros).cast(pl.Datetime("us", "UTC"))


def _currency_for(rng: np.random.Generator, region: Region, n: int) -> np.ndarray:
    """Index into region.currencies: the first is the region's main currency."""
    k = len(region.currencies)
    p = np.full(k, 0.2 / max(1, k - 1))
    p[0] = 0.8 if k > 1 else 1.0
    return rng.choice(k, n, p=p / p.sum())


def _amounts(
    rng: np.random.Generator, median_usd: np.ndarray, sigma: float, region: Region, currency: np.ndarray
) -> np.ndarray:
    usd = median_usd * rng.lognormal(0.0, sigma, median_usd.size)
    rate = np.array([ref.USD_RATES[c] for c in region.currencies])[currency]
    return np.round(np.maximum(usd, 0.5) * rate, 2)


def _pick(vocab: tuple[str, ...] | pl.Series, idx: np.ndarray) -> pl.Series:
    """Strings by index, built in polars (numpy string arrays are slow to convert)."""
    series = vocab if isinstance(vocab, pl.Series) else pl.Series(list(vocab), dtype=pl.String)
    return series.gather(idx)


def _frame(**columns: object) -> pl.DataFrame:
    return pl.DataFrame(columns)


def _legit(cfg: GeneratorConfig, region: Region, day: date, n: int) -> pl.DataFrame:
    pop = population(cfg, region)
    rng = stream_rng(cfg, region.name, day, _LEGIT)
    drifted = cfg.drift is not None and cfg.drift.applies(region.name, day)
    shift = cfg.drift.magnitude if drifted and cfg.drift else 0.0
    feats = cfg.drift.features if drifted and cfg.drift else ()
    cust = rng.choice(pop.customer_ids.len(), n, p=pop.activity)
    merchant_p = pop.merchant_popularity
    if "category" in feats:
        drifting = [ref.CATEGORIES.index(c) for c in ref.DRIFTING_CATEGORIES]
        boost = np.where(np.isin(pop.merchant_category, drifting), 1.0 + 4 * shift, 1.0)
        merchant_p = merchant_p * boost / (merchant_p * boost).sum()
    merch = rng.choice(pop.merchant_ids.len(), n, p=merchant_p)
    channel_p = np.array(LEGIT_CHANNEL_P)
    if "channel" in feats:
        channel_p = np.array([0.45 - 0.3 * shift, 0.30, 0.25 + 0.3 * shift]).clip(0.01)
    channel = rng.choice(3, n, p=channel_p / channel_p.sum())
    currency = _currency_for(rng, region, n)
    median = ref.CATEGORY_MEDIAN_USD[pop.merchant_category[merch]] * pop.spend_scale[cust]
    if "amount" in feats:
        median = median * (1.0 + shift)
    abroad = rng.random(n) < LEGIT_ABROAD
    n_home = len(region.countries)
    country = np.where(
        abroad, n_home + rng.integers(0, len(ref.FOREIGN_COUNTRIES), n), pop.home_country[cust]
    )
    device = 2 * cust + (rng.random(n) < LEGIT_SECOND_DEVICE)
    return _frame(
        transaction_id=transaction_ids(cfg, region.name, day, _LEGIT, n),
        customer_id=_pick(pop.customer_ids, cust),
        merchant_id=_pick(pop.merchant_ids, merch),
        merchant_category=_pick(ref.CATEGORIES, pop.merchant_category[merch]),
        amount=_amounts(rng, median, LEGIT_AMOUNT_SIGMA, region, currency),
        currency=_pick(region.currencies, currency),
        event_time=_timestamps(day, _seconds_of_day(rng, pop, region, day, n)),
        channel=_pick(ref.CHANNELS, channel),
        device_id=_pick(pop.device_ids, device),
        country=_pick(pop.country_vocab, country),
        email=_pick(pop.emails, cust),
        card_fingerprint=_pick(pop.fingerprints, cust),
    )


def _n_fraud(cfg: GeneratorConfig) -> int:
    return round(cfg.rows_per_day * cfg.fraud_rate)


# A day's frauds are regenerated for each of the next max_chargeback_delay_days days'
# chargebacks: kept (they are small, about 1 % of a day) so a run over many days draws each once.
@lru_cache(maxsize=256)
def _fraud(cfg: GeneratorConfig, region: Region, day: date) -> pl.DataFrame:
    """Stolen-card bursts: the part of the day a model should learn to catch."""
    pop = population(cfg, region)
    rng = stream_rng(cfg, region.name, day, _FRAUD)
    target = _n_fraud(cfg)
    if target == 0:
        return _legit(cfg, region, day, 0)
    sizes = rng.integers(2, 7, max(1, int(np.ceil(target / 4))))
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), target) + 1]
    sizes[-1] -= max(0, sizes.sum() - target)
    sizes = sizes[sizes > 0]
    n, bursts = int(sizes.sum()), sizes.size
    burst_of = np.repeat(np.arange(bursts), sizes)
    victims = rng.integers(0, pop.customer_ids.len(), bursts)[burst_of]
    start = _seconds_of_day(rng, pop, region, day, bursts)[burst_of]
    gaps = rng.exponential(240.0, n)
    first = np.r_[0, np.cumsum(sizes)[:-1]]
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[first] - gaps[first], sizes)
    seconds = np.minimum(start + offsets, 86_399.0)
    use_compromised = rng.random(n) < FRAUD_AT_COMPROMISED
    merch = np.where(
        use_compromised,
        pop.compromised_merchants[rng.integers(0, pop.compromised_merchants.size, n)],
        pop.high_risk_merchants[rng.integers(0, pop.high_risk_merchants.size, n)],
    )
    currency = _currency_for(rng, region, n)
    median = ref.CATEGORY_MEDIAN_USD[pop.merchant_category[merch]] * FRAUD_AMOUNT_FACTOR
    channel = np.where(rng.random(n) < FRAUD_ECOM, ref.CHANNELS.index("ecom"), rng.integers(0, 2, n))
    abroad = rng.random(bursts)[burst_of] < FRAUD_ABROAD
    n_home = len(region.countries)
    country = np.where(
        abroad, n_home + rng.integers(0, len(ref.FOREIGN_COUNTRIES), n), pop.home_country[victims]
    )
    new_device = rng.random(bursts)[burst_of] < FRAUD_NEW_DEVICE
    fraud_device = "dv" + pl.Series(mix64(rng.integers(0, 2**62, bursts, dtype=np.uint64))).cast(pl.String)
    device = pl.select(
        pl.when(pl.Series(new_device))
        .then(_pick(fraud_device, burst_of))
        .otherwise(_pick(pop.device_ids, 2 * victims))
    ).to_series()
    return _frame(
        transaction_id=transaction_ids(cfg, region.name, day, _FRAUD, n),
        customer_id=_pick(pop.customer_ids, victims),
        merchant_id=_pick(pop.merchant_ids, merch),
        merchant_category=_pick(ref.CATEGORIES, pop.merchant_category[merch]),
        amount=_amounts(rng, median, FRAUD_AMOUNT_SIGMA, region, currency),
        currency=_pick(region.currencies, currency),
        event_time=_timestamps(day, seconds),
        channel=_pick(ref.CHANNELS, channel),
        device_id=device,
        country=_pick(pop.country_vocab, country),
        email=_pick(pop.emails, victims),
        card_fingerprint=_pick(pop.fingerprints, victims),
    )


def _to_source_format(clean: pl.DataFrame) -> pl.DataFrame:
    """As the upstream switch delivers it: timestamps as ISO-8601 strings."""
    return clean.with_columns(pl.col("event_time").dt.strftime(ref.TIMESTAMP_FORMAT))


def _inject_transactions(cfg: GeneratorConfig, region: str, day: date, clean: pl.DataFrame) -> GeneratedBatch:
    n_bad = round(clean.height * cfg.malformed_rate)
    if n_bad == 0:
        return GeneratedBatch(clean, {})
    rng = stream_rng(cfg, region, day, _MALFORMED)
    kinds = np.array(ref.MALFORMED_KINDS)[np.arange(n_bad) % len(ref.MALFORMED_KINDS)]
    bad = clean.sample(n_bad, with_replacement=True, seed=int(rng.integers(0, 2**31)))
    bad = bad.with_columns(
        transaction_id=transaction_ids(cfg, region, day, _MALFORMED, n_bad), kind=pl.Series(kinds)
    )
    dup_ids = clean["transaction_id"].sample(n_bad, with_replacement=True, seed=int(rng.integers(0, 2**31)))
    future = (datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=3)).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z"
    )
    k = pl.col("kind")
    bad = bad.with_columns(
        customer_id=pl.when(k == "null_customer_id").then(None).otherwise(pl.col("customer_id")),
        amount=pl.when(k == "negative_amount")
        .then(-pl.col("amount"))
        .when(k == "absurd_amount")
        .then(pl.lit(9.9e12))
        .otherwise(pl.col("amount")),
        event_time=pl.when(k == "unparseable_timestamp")
        .then(pl.lit("31/02/2026 25:61"))
        .when(k == "future_timestamp")
        .then(pl.lit(future))
        .otherwise(pl.col("event_time")),
        currency=pl.when(k == "unknown_currency").then(pl.lit("XXX")).otherwise(pl.col("currency")),
        transaction_id=pl.when(k == "duplicate_transaction_id")
        .then(pl.Series(dup_ids))
        .otherwise(pl.col("transaction_id")),
    )
    counts = dict(zip(*np.unique(kinds, return_counts=True), strict=True))
    rows = pl.concat([clean, bad.drop("kind")])
    order = stream_rng(cfg, region, day, _MALFORMED + 10).permutation(rows.height)
    return GeneratedBatch(rows[order], {str(k): int(v) for k, v in counts.items()})


def generate_transactions(cfg: GeneratorConfig, region: Region, day: date) -> GeneratedBatch:
    """All transactions the source delivers for one region and UTC day."""
    if day < cfg.history_start:
        raise ValueError(f"{day} is before the generator's history_start {cfg.history_start}")
    fraud = _fraud(cfg, region, day)
    legit = _legit(cfg, region, day, max(0, cfg.rows_per_day - fraud.height))
    clean = pl.concat([legit, fraud]).sort("event_time", "transaction_id")
    return _inject_transactions(cfg, region.name, day, _to_source_format(clean))


def _chargebacks_from(cfg: GeneratorConfig, region: Region, fraud_day: date) -> pl.DataFrame:
    fraud = _fraud(cfg, region, fraud_day)
    rng = stream_rng(cfg, region.name, fraud_day, _FRAUD + 20)
    n = fraud.height
    reported = rng.random(n) < cfg.chargeback_report_rate
    delay_days = 1 + np.minimum(rng.geometric(CHARGEBACK_DELAY_P, n) - 1, cfg.max_chargeback_delay_days - 1)
    fraud_start = datetime(fraud_day.year, fraud_day.month, fraud_day.day, tzinfo=UTC)
    lands = (
        int((fraud_start + timedelta(days=1)).timestamp() * 1e6)
        + ((delay_days - 1) * 86_400 + rng.uniform(0, 86_399, n)).astype(np.int64) * 1_000_000
    )
    return (
        fraud.select("transaction_id", "amount", "currency")
        .with_columns(
            chargeback_at=pl.Series(lands).cast(pl.Datetime("us", "UTC")),
            reason_code=_pick(ref.CHARGEBACK_REASONS, rng.integers(0, len(ref.CHARGEBACK_REASONS), n)),
        )
        .filter(pl.Series(reported))
    )


def _own_ids(cfg: GeneratorConfig, region: Region, day: date) -> pl.Series:
    """The ids of every payment the source delivers for `day` (ids are a function of the
    day, the stream and the row's index: no rows are generated)."""
    n_fraud = _fraud(cfg, region, day).height
    return pl.concat(
        [
            transaction_ids(cfg, region.name, day, _FRAUD, n_fraud),
            transaction_ids(cfg, region.name, day, _LEGIT, max(0, cfg.rows_per_day - n_fraud)),
        ]
    )


def generate_labels(
    cfg: GeneratorConfig, region: Region, day: date, served: pl.DataFrame | None = None
) -> GeneratedBatch:
    """Chargebacks that land on `day`, for frauds of the previous days: the generator's own,
    and those of the transactions the service `served` on those days (meridian.served_labels
    judges them by the same fraud mechanism; a payment of the source's own that was served
    again keeps the source's verdict)."""
    from meridian import served_labels

    if day < cfg.history_start:
        raise ValueError(f"{day} is before the generator's history_start {cfg.history_start}")
    first = max(cfg.history_start, day - timedelta(days=cfg.max_chargeback_delay_days))
    parts = [_chargebacks_from(cfg, region, first + timedelta(days=i)) for i in range((day - first).days)]
    served_ids = pl.Series("transaction_id", [], pl.String)
    if served is not None and served.height:
        days = [first + timedelta(days=i) for i in range((day - first).days)]
        own = pl.concat([_own_ids(cfg, region, d) for d in days]) if days else None
        if own is not None:  # a payment of the source's own, served again, keeps the source's verdict
            served = served.join(own.to_frame("transaction_id"), on="transaction_id", how="anti")
        parts.append(served_labels.chargebacks(cfg, region, served))
        served_ids = parts[-1]["transaction_id"]
    schema = {
        "transaction_id": pl.String,
        "amount": pl.Float64,
        "currency": pl.String,
        "chargeback_at": pl.Datetime("us", "UTC"),
        "reason_code": pl.String,
    }
    labels = pl.concat([pl.DataFrame(schema=schema), *parts], how="vertical_relaxed")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    labels = (
        labels.filter(pl.col("chargeback_at").is_between(start, start + timedelta(days=1), closed="left"))
        .sort("chargeback_at", "transaction_id")
        .select(
            "transaction_id",
            pl.col("chargeback_at").dt.strftime(ref.TIMESTAMP_FORMAT),
            "reason_code",
            "amount",
            "currency",
        )
    )
    n_served = int(labels["transaction_id"].is_in(served_ids.implode()).sum())
    n_bad = round(labels.height * cfg.malformed_rate)
    if n_bad == 0:
        return GeneratedBatch(labels, {}, n_served)
    rng = stream_rng(cfg, region.name, day, _LABEL_MALFORMED)
    kinds = np.array(ref.LABEL_MALFORMED_KINDS)[np.arange(n_bad) % len(ref.LABEL_MALFORMED_KINDS)]
    bad = labels.sample(n_bad, with_replacement=True, seed=int(rng.integers(0, 2**31))).with_columns(
        kind=pl.Series(kinds)
    )
    k = pl.col("kind")
    bad = bad.with_columns(
        transaction_id=pl.when(k == "null_transaction_id").then(None).otherwise(pl.col("transaction_id")),
        chargeback_at=pl.when(k == "unparseable_timestamp")
        .then(pl.lit("yesterday"))
        .otherwise(pl.col("chargeback_at")),
    ).drop("kind")
    counts = dict(zip(*np.unique(kinds, return_counts=True), strict=True))
    return GeneratedBatch(pl.concat([labels, bad]), {str(k): int(v) for k, v in counts.items()}, n_served)
