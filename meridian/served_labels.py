"""The payment world's verdict on the transactions the service served: their chargebacks.

The source's chargeback feed covers every transaction the switch processed, not only the
ones it generated itself: a card issuer files a chargeback for a fraudulent payment
whoever scored it. A served transaction is fraud with the probability that the
generator's own fraud mechanism gives a transaction like it,

    P(fraud | x) = pi * Lf(x) / (pi * Lf(x) + (1 - pi) * Ll(x)),

where pi is the fraud rate and Lf, Ll are the likelihoods of x's merchant, channel,
country, device and amount under the fraud mechanism and under legitimate behaviour, with
the parameters meridian.generator draws its own rows from (meridian.payment_world). What a
transaction does not carry (no device id) or the world does not know (a merchant or
customer outside the region's population) counts for neither side. The one signal of the
mechanism a single transaction cannot show, a burst of payments on one card within
minutes, is not used.

Every draw (fraud or not, reported or not, the delay, the reason) is keyed by (seed,
region, transaction id): the same served transaction has the same fate whichever day's
feed or which re-run asks, so re-ingesting a day of chargebacks is idempotent. A fraud is
reported with the generator's report rate and lands after the generator's delay, counted
from the UTC day of its event time.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date, timedelta

import numpy as np
import polars as pl

from meridian import payment_world as world
from meridian import reference_data as ref
from meridian.topology import Region
from meridian.validation import TRANSACTION_COLUMNS

# What the service receives of a payment: the lake's columns less the personal ones it never sees.
SERVED_COLUMNS = tuple(c for c in TRANSACTION_COLUMNS if c not in ("email", "card_fingerprint"))
_FLOOR = 1e-6  # a likelihood the mechanism makes impossible: near-certain, never a division by zero


def _log_ratio(fraud: np.ndarray, legit: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(fraud, _FLOOR)) - np.log(np.maximum(legit, _FLOOR))


def fraud_probability(cfg: world.GeneratorConfig, region: Region, served: pl.DataFrame) -> np.ndarray:
    """P(fraud) of each served row under the generator's mechanism (see the module docstring)."""
    n = served.height
    if n == 0 or cfg.fraud_rate <= 0:  # (GeneratorConfig keeps the rate in [0, 0.5))
        return np.zeros(n)
    pop = world.population(cfg, region)
    merchants = pl.DataFrame({"merchant_id": pop.merchant_ids, "_m": np.arange(pop.merchant_ids.len())})
    customers = pl.DataFrame({"customer_id": pop.customer_ids, "_c": np.arange(pop.customer_ids.len())})
    rows = served.select(SERVED_COLUMNS).join(merchants, on="merchant_id", how="left")
    rows = rows.join(customers, on="customer_id", how="left")
    m = rows["_m"].to_numpy(allow_copy=True)
    c = rows["_c"].to_numpy(allow_copy=True)
    m_known, c_known = ~np.isnan(m.astype(float)), ~np.isnan(c.astype(float))
    mi, ci = np.where(m_known, m, 0).astype(np.int64), np.where(c_known, c, 0).astype(np.int64)
    log_odds = np.full(n, math.log(cfg.fraud_rate / (1 - cfg.fraud_rate)))

    # Merchant: frauds happen at compromised and high-risk merchants, payments at popular ones.
    compromised = np.isin(mi, pop.compromised_merchants)
    high_risk = np.isin(mi, pop.high_risk_merchants)
    at_fraud = (
        world.FRAUD_AT_COMPROMISED * compromised / pop.compromised_merchants.size
        + (1 - world.FRAUD_AT_COMPROMISED) * high_risk / pop.high_risk_merchants.size
    )
    log_odds += np.where(m_known, _log_ratio(at_fraud, pop.merchant_popularity[mi]), 0.0)

    # Channel.
    channel = rows["channel"].to_numpy(allow_copy=True)
    other = (1 - world.FRAUD_ECOM) / 2
    fraud_channel = {"pos": other, "contactless": other, "ecom": world.FRAUD_ECOM}
    legit_channel = dict(zip(ref.CHANNELS, world.LEGIT_CHANNEL_P, strict=True))
    known_channel = np.isin(channel, ref.CHANNELS)
    log_odds += np.where(
        known_channel,
        _log_ratio(
            np.array([fraud_channel.get(x, 1.0) for x in channel]),
            np.array([legit_channel.get(x, 1.0) for x in channel]),
        ),
        0.0,
    )

    # Country: the customer's home country, or abroad (any other).
    home_vocab = np.array(pop.country_vocab.to_list(), dtype=object)
    home = np.where(
        c_known,
        rows["country"].to_numpy(allow_copy=True) == home_vocab[pop.home_country[ci]],
        np.isin(rows["country"].to_numpy(allow_copy=True), region.countries),
    )
    log_odds += np.where(
        home,
        _log_ratio(np.full(n, 1 - world.FRAUD_ABROAD), np.full(n, 1 - world.LEGIT_ABROAD)),
        _log_ratio(np.full(n, world.FRAUD_ABROAD), np.full(n, world.LEGIT_ABROAD)),
    )

    # Device: the customer's first, the customer's second, or one the customer never used.
    device = rows["device_id"].to_numpy(allow_copy=True)
    devices = np.array(pop.device_ids.to_list(), dtype=object)
    first, second = devices[2 * ci], devices[2 * ci + 1]
    has_device = c_known & np.array([d is not None for d in device])
    fraud_device = np.where(
        device == first, 1 - world.FRAUD_NEW_DEVICE, np.where(device == second, 0.0, world.FRAUD_NEW_DEVICE)
    )
    legit_device = np.where(
        device == first,
        1 - world.LEGIT_SECOND_DEVICE,
        np.where(device == second, world.LEGIT_SECOND_DEVICE, 0.0),
    )
    log_odds += np.where(has_device, _log_ratio(fraud_device, legit_device), 0.0)

    # Amount in USD: lognormal around the category's median (x 2.5 for fraud, x the
    # customer's spend scale for a payment).
    category_index = {name: i for i, name in enumerate(ref.CATEGORIES)}
    given = np.array([category_index.get(x, -1) for x in rows["merchant_category"].to_list()])
    category = np.where(m_known, pop.merchant_category[mi], given)
    known_amount = category >= 0
    rate = np.array([ref.USD_RATES.get(x, math.nan) for x in rows["currency"].to_list()])
    usd = np.log(np.maximum(rows["amount"].cast(pl.Float64).to_numpy() / rate, 1e-9))
    median = np.log(ref.CATEGORY_MEDIAN_USD[np.maximum(category, 0)])
    scale = np.where(c_known, pop.spend_scale[ci], 1.0)

    def log_density(mu: np.ndarray, sigma: float) -> np.ndarray:
        return -math.log(sigma) - (usd - mu) ** 2 / (2 * sigma**2)

    amount_ratio = log_density(
        median + math.log(world.FRAUD_AMOUNT_FACTOR), world.FRAUD_AMOUNT_SIGMA
    ) - log_density(median + np.log(scale), world.LEGIT_AMOUNT_SIGMA)
    log_odds += np.where(known_amount & np.isfinite(amount_ratio), amount_ratio, 0.0)
    return 1.0 / (1.0 + np.exp(-log_odds))


def _uniforms(cfg: world.GeneratorConfig, region: str, transaction_id: str) -> tuple[float, ...]:
    digest = hashlib.blake2b(f"{cfg.seed}|{region}|{transaction_id}".encode(), digest_size=40).digest()
    return tuple(int.from_bytes(digest[i : i + 8], "little") / 2.0**64 for i in range(0, 40, 8))


def outcomes(cfg: world.GeneratorConfig, region: Region, served: pl.DataFrame) -> pl.DataFrame:
    """Each served row's fate: fraud probability, fraud or not, and its chargeback if reported."""
    p = fraud_probability(cfg, region, served)
    draws = [_uniforms(cfg, region.name, t) for t in served["transaction_id"].to_list()]
    u = np.array(draws).reshape(-1, 5)
    fraud = u[:, 0] < p
    reported = fraud & (u[:, 1] < cfg.chargeback_report_rate)
    geometric = np.ceil(np.log1p(-u[:, 2]) / math.log1p(-world.CHARGEBACK_DELAY_P)).clip(min=1)
    delay_days = 1 + np.minimum(geometric - 1, cfg.max_chargeback_delay_days - 1)
    day_start = served["event_time"].dt.truncate("1d").dt.epoch("us").to_numpy()
    lands = day_start + ((delay_days * 86_400) + np.floor(u[:, 3] * 86_399)).astype(np.int64) * 1_000_000
    reasons = np.array(ref.CHARGEBACK_REASONS)[(u[:, 4] * len(ref.CHARGEBACK_REASONS)).astype(int)]
    return served.select("transaction_id", "amount", "currency").with_columns(
        fraud_probability=pl.Series(p),
        is_fraud=pl.Series(fraud),
        reported=pl.Series(reported),
        chargeback_at=pl.Series(lands).cast(pl.Datetime("us", "UTC")),
        reason_code=pl.Series(reasons, dtype=pl.String),
    )


def chargebacks(cfg: world.GeneratorConfig, region: Region, served: pl.DataFrame) -> pl.DataFrame:
    """The chargebacks the world files for `served` (any landing day), in the generator's
    internal shape: transaction_id, amount, currency, chargeback_at, reason_code."""
    if served.height == 0:
        return pl.DataFrame(
            schema={
                "transaction_id": pl.String,
                "amount": pl.Float64,
                "currency": pl.String,
                "chargeback_at": pl.Datetime("us", "UTC"),
                "reason_code": pl.String,
            }
        )
    fate = outcomes(cfg, region, served.unique("transaction_id", keep="first", maintain_order=True))
    return fate.filter("reported").select(
        "transaction_id", "amount", "currency", "chargeback_at", "reason_code"
    )


def feed_days(cfg: world.GeneratorConfig, day: date) -> list[date]:
    """The event days whose served transactions can have a chargeback landing on `day`."""
    first = max(cfg.history_start, day - timedelta(days=cfg.max_chargeback_delay_days))
    return [first + timedelta(days=i) for i in range((day - first).days)]
