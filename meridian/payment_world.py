"""The simulated payment world the generator draws from, and served_labels judges by.

Its configuration (seed, volume, fraud rate, chargeback delays, drift), the keyed random
streams (one per seed, region, day and stream: adding a region or a day never changes
another's data), the ids they mint, each region's population (customers and their devices,
merchants and which are compromised or high-risk) and the fraud mechanism's parameters.
meridian.generator draws payments, frauds and chargebacks from it; meridian.served_labels
gives what the scoring service served the verdict the same world would.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import polars as pl

from meridian import reference_data as ref
from meridian.topology import Region

# The fraud mechanism, and the legitimate behaviour it stands out from. Named once:
# the generator draws by them, meridian.served_labels judges what the service served by them.
FRAUD_AT_COMPROMISED = 0.6  # share of frauds at a compromised merchant; the rest at high-risk ones
FRAUD_AMOUNT_FACTOR = 2.5  # fraud amounts: lognormal around this x the category's median
FRAUD_AMOUNT_SIGMA = 0.8
FRAUD_ECOM = 0.85  # else pos or contactless, evenly
FRAUD_ABROAD = 0.4  # per burst: a foreign country
FRAUD_NEW_DEVICE = 0.8  # per burst: a device the customer never used; else the customer's first
LEGIT_CHANNEL_P = (0.45, 0.30, 0.25)  # pos, contactless, ecom
LEGIT_ABROAD = 0.02
LEGIT_SECOND_DEVICE = 0.2  # else the customer's first device
LEGIT_AMOUNT_SIGMA = 0.7  # lognormal around the category's median x the customer's spend scale
CHARGEBACK_DELAY_P = 0.3  # delay in days: 1 + geometric(p) - 1, capped at max_chargeback_delay_days


DRIFTABLE = ("amount", "channel", "category")
# A shift of 10 makes amounts 11 times larger and the drifting categories 41 times more likely:
# far past any alarm. Beyond it (or at inf or NaN) the generator's weights stop being a
# distribution; a negative shift is no drift this generator knows.
MAX_DRIFT_MAGNITUDE = 10.0


@dataclass(frozen=True)
class DriftSpec:
    """Shift chosen distributions of the given regions from `start_day` on: amounts up,
    channels towards e-commerce, the drifting categories more likely, by `magnitude`."""

    start_day: date
    regions: tuple[str, ...]
    features: tuple[str, ...] = DRIFTABLE
    magnitude: float = 0.6

    def __post_init__(self) -> None:
        unknown = sorted(set(self.features) - set(DRIFTABLE))
        if unknown or not self.features:
            raise ValueError(
                f"drift features {list(self.features)!r}: each must be one of {list(DRIFTABLE)}, "
                "and at least one is needed"
            )
        if not 0 <= self.magnitude <= MAX_DRIFT_MAGNITUDE:  # NaN fails too
            raise ValueError(
                f"drift magnitude must be a number in [0, {MAX_DRIFT_MAGNITUDE:g}], got {self.magnitude!r}"
            )

    def applies(self, region: str, day: date) -> bool:
        return region in self.regions and day >= self.start_day


# A region-day is generated in memory: 2,000,000 rows peaked at 1.7 GB (4.3 s). Past 5 million a
# day a worker would need several GB for one partition: a typo (a zero too many) is refused.
MAX_ROWS_PER_DAY = 5_000_000


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 7
    rows_per_day: int = 5_000
    fraud_rate: float = 0.012
    chargeback_report_rate: float = 0.95
    max_chargeback_delay_days: int = 10
    history_start: date = ref.HISTORY_START
    malformed_rate: float = 0.0
    drift: DriftSpec | None = None

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        if not 1 <= self.rows_per_day <= MAX_ROWS_PER_DAY:
            raise ValueError(f"rows_per_day must be in [1, {MAX_ROWS_PER_DAY:,}], got {self.rows_per_day:,}")
        if not 0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {self.fraud_rate}")
        if not 0 <= self.malformed_rate < 0.5:
            raise ValueError(f"malformed_rate must be in [0, 0.5), got {self.malformed_rate}")
        if self.max_chargeback_delay_days < 1:
            raise ValueError("max_chargeback_delay_days must be >= 1")


def region_key(region: str) -> int:
    """Stable per-region integer: adding a region never changes another's data."""
    return zlib.crc32(region.encode())


def stream_rng(cfg: GeneratorConfig, region: str, day: date | None, stream: int) -> np.random.Generator:
    ordinal = day.toordinal() if day else 0
    return np.random.default_rng([cfg.seed, region_key(region), ordinal, stream])


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: ids that look random and reveal nothing (no fraud marker)."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def transaction_ids(cfg: GeneratorConfig, region: str, day: date, stream: int, n: int) -> pl.Series:
    base = (np.uint64(day.toordinal()) << np.uint64(34)) | (np.uint64(stream) << np.uint64(32))
    salt = np.uint64((cfg.seed * 1_000_003 + region_key(region)) & 0xFFFFFFFF) << np.uint64(12)
    raw = base + np.arange(n, dtype=np.uint64) + salt
    return "tx" + pl.Series("transaction_id", mix64(raw)).cast(pl.String)


@dataclass(frozen=True)
class Population:
    customer_ids: pl.Series
    emails: pl.Series
    fingerprints: pl.Series
    country_vocab: pl.Series  # region countries, then ref.FOREIGN_COUNTRIES
    home_country: np.ndarray  # index into country_vocab
    spend_scale: np.ndarray
    activity: np.ndarray  # sampling probabilities
    device_ids: pl.Series  # two per customer: 2*i and 2*i + 1
    merchant_ids: pl.Series
    merchant_category: np.ndarray  # index into ref.CATEGORIES
    merchant_popularity: np.ndarray
    compromised_merchants: np.ndarray  # indices
    high_risk_merchants: np.ndarray  # indices
    local_hour_weights: np.ndarray


def population_size(rows_per_day: int) -> tuple[int, int]:
    return max(500, rows_per_day), min(20_000, max(150, rows_per_day // 20))


@lru_cache(maxsize=16)
def population(cfg: GeneratorConfig, region: Region) -> Population:
    rng = stream_rng(cfg, region.name, None, 99)
    n_customers, n_merchants = population_size(cfg.rows_per_day)
    code = region.name.replace("-", "")  # seeds the device ids: unchanged, so is the data
    idx = pl.Series(np.arange(n_customers)).cast(pl.String)
    customer_ids = f"{region.customer_prefix}c" + idx
    domains = pl.Series(["mail.example", "post.example", "inbox.example", "web.example"])
    emails = "user" + idx + "@" + domains.gather(np.arange(n_customers) % 4)
    fp = mix64(np.arange(n_customers, dtype=np.uint64) + np.uint64(region_key(region.name) << 20))
    fingerprints = "fp" + pl.Series(fp).cast(pl.String)
    country_vocab = pl.Series([*region.countries, *ref.FOREIGN_COUNTRIES])
    country_p = rng.dirichlet(np.full(len(region.countries), 2.0))
    home_country = rng.choice(len(region.countries), n_customers, p=country_p)
    spend_scale = rng.lognormal(0.0, 0.45, n_customers)
    activity = rng.gamma(1.2, 1.0, n_customers)
    activity /= activity.sum()
    device_ids = "dv" + pl.Series(
        mix64(np.arange(2 * n_customers, dtype=np.uint64) + np.uint64(region_key(code)))
    ).cast(pl.String)
    category_mix = rng.dirichlet(np.full(len(ref.CATEGORIES), 3.0))
    merchant_category = rng.choice(len(ref.CATEGORIES), n_merchants, p=category_mix)
    merchant_ids = f"{code}-m" + pl.Series(np.arange(n_merchants)).cast(pl.String)
    popularity = 1.0 / np.arange(1, n_merchants + 1) ** 0.9
    rng.shuffle(popularity)
    popularity /= popularity.sum()
    compromised = rng.choice(n_merchants, max(3, n_merchants // 30), replace=False)
    high_risk = np.flatnonzero(
        np.isin(merchant_category, [ref.CATEGORIES.index(c) for c in ref.HIGH_RISK_CATEGORIES])
    )
    if high_risk.size == 0:
        high_risk = compromised
    # Daily seasonality in local time: quiet nights, lunch and evening peaks.
    hours = np.arange(24)
    weights = 0.15 + np.exp(-((hours - 12.5) ** 2) / 6) + 1.2 * np.exp(-((hours - 19) ** 2) / 8)
    return Population(
        customer_ids,
        emails,
        fingerprints,
        country_vocab,
        home_country,
        spend_scale,
        activity,
        device_ids,
        merchant_ids,
        merchant_category,
        popularity,
        compromised,
        high_risk,
        weights / weights.sum(),
    )
