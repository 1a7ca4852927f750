"""The upstream payment switch: the seeded generator, one producer into the landing zone.

Ingestion reads a region-day from the region's landing zone (meridian.landing), where users
deliver their files. The generator is one producer among them: before a region-day is
ingested it delivers its file for that day there (`<feed>/<day>/generator.parquet`), once,
as any producer would, so the default run takes the same path as a user's data.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import Field

from meridian import served_labels
from meridian.generator import GeneratedBatch, GeneratorConfig, generate_labels, generate_transactions
from meridian.lake_tables import LakeTable
from meridian.payment_world import DRIFTABLE, MAX_DRIFT_MAGNITUDE, MAX_ROWS_PER_DAY, DriftSpec
from meridian.reference_data import HISTORY_START
from meridian.served import read_served_transactions
from meridian.settings import settings
from meridian.topology import Region, load_topology


def _day(option: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{option} must be a day as YYYY-MM-DD, got {value!r}") from None


class TransactionSourceResource(dg.ConfigurableResource):
    """Delivers one region-day of raw transactions or chargebacks, deterministically."""

    seed: int = Field(default=7, ge=0, description="Seed of the generator; same seed, same data")
    rows_per_day: int = Field(
        default=5_000, ge=1, le=MAX_ROWS_PER_DAY, description="Transactions per region per day"
    )
    fraud_rate: float = Field(default=0.012, ge=0, lt=0.5, description="Share of transactions that are fraud")
    malformed_rate: float = Field(
        default=0.0, ge=0, lt=0.5, description="Share of extra malformed rows injected per batch"
    )
    history_start: str = Field(
        default=HISTORY_START.isoformat(), description="First day the source has data for"
    )
    max_chargeback_delay_days: int = Field(default=10, ge=1, description="Chargebacks land at most this late")
    drift_regions: list[str] = Field(default_factory=list, description="Regions whose distributions drift")
    drift_start_day: str | None = Field(default=None, description="First drifted day (YYYY-MM-DD)")
    drift_features: list[str] = Field(
        default_factory=lambda: list(DRIFTABLE),
        description=f"Which distributions drift: of {list(DRIFTABLE)}",
    )
    drift_magnitude: float = Field(
        default=0.6, ge=0, le=MAX_DRIFT_MAGNITUDE, description="Relative size of the shift"
    )
    generate: bool = Field(
        default=True,
        description="The seeded generator delivers each region-day into the landing zone; "
        "false: only the files users deliver are ingested",
    )

    def config(self) -> GeneratorConfig:
        drift = None
        if self.drift_regions:
            if not self.drift_start_day:
                raise ValueError("drift_regions is set but drift_start_day is not")
            known = [r.name for r in load_topology(settings().topology_path).regions]
            unknown = [r for r in self.drift_regions if r not in known]
            if unknown:  # a typo would drift nothing, silently
                raise ValueError(
                    f"drift_regions names unknown region(s) {unknown}; regions.yaml defines {known}"
                )
            drift = DriftSpec(
                start_day=_day("drift_start_day", self.drift_start_day),
                regions=tuple(self.drift_regions),
                features=tuple(self.drift_features),
                magnitude=self.drift_magnitude,
            )
        return GeneratorConfig(
            seed=self.seed,
            rows_per_day=self.rows_per_day,
            fraud_rate=self.fraud_rate,
            malformed_rate=self.malformed_rate,
            history_start=_day("history_start", self.history_start),
            max_chargeback_delay_days=self.max_chargeback_delay_days,
            drift=drift,
        )

    def transactions(self, region: Region, day: date) -> GeneratedBatch:
        return generate_transactions(self.config(), region, day)

    def labels(self, region: Region, day: date, raw_transactions: LakeTable | None = None) -> GeneratedBatch:
        """Chargebacks landing on `day`: the generator's own, and, given the region's
        raw_transactions table, those of what the scoring service served on the days before
        (meridian.served_labels: the feed covers every transaction the switch processed)."""
        cfg = self.config()
        served = None
        if raw_transactions is not None:
            served = read_served_transactions(raw_transactions, served_labels.feed_days(cfg, day))
        return generate_labels(cfg, region, day, served)

    def deliver(self, feed: str, region: Region, day: date, store, raw_transactions: LakeTable) -> int | None:
        """Deliver the generator's file of `feed` for `day` into the region's landing zone
        (`store`: its folder or its bucket), unless it is there already (a delivered file is
        immutable) or the generator is off.

        Returns the chargebacks of served transactions in a chargebacks file it wrote now, as
        the metadata reports them; None when it delivered nothing.
        """
        import io

        from meridian.landing import GENERATOR_FILE

        if not self.generate:
            return None
        key = f"{feed}/{day.isoformat()}/{GENERATOR_FILE}"
        if store.exists(key):
            return None
        if feed == "transactions":
            batch = self.transactions(region, day)
        else:
            batch = self.labels(region, day, raw_transactions)
        # Encoded in memory and put into the zone whole: no scratch copy anywhere (a shared /tmp
        # would hold a region's personal data outside its zone).
        content = io.BytesIO()
        batch.rows.write_parquet(content)
        store.put(key, content.getvalue())
        return batch.served_chargebacks
