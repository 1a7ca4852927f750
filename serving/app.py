"""Real-time scoring: online features + the region's champion model over HTTP.

    POST /v1/{region}/score               a transaction → features → model → score
    GET  /v1/{region}/features/{customer} the customer's served features
    GET  /healthz                         the process is up
    GET  /readyz                          every region has a model and a reachable online store

A request for region R is answered with R's online store and R's model only; a customer
R has never seen is a 404, never a lookup elsewhere. Request features are computed
exactly as the offline SQL computes them (meridian.modeling.transaction_entities_sql):
amount in USD from the same currency seed, e-commerce / contactless channel, card used
outside the region's countries, local hour in the region's time zone.

Models come from the MLflow registry by alias (`champion`). A background thread polls
the alias; when it moves, the new version is loaded beside the old one and swapped in
with one reference assignment, so requests in flight finish on the model they started
with and none fails during the swap.
"""

from __future__ import annotations

import csv
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
from fastapi import FastAPI, HTTPException, Path
from pydantic import BaseModel, Field

from meridian import registry
from meridian.feature_views import feature_views
from meridian.online_store import OnlineStore, OnlineStoreUnavailable, serve, to_micros
from meridian.paths import REPO_ROOT, region_paths
from meridian.topology import Region, Topology

VIEWS = {view.name: view for view in feature_views()}
CURRENCY_SEED = REPO_ROOT / "dbt_project" / "seeds" / "currency_rates.csv"


class Transaction(BaseModel):
    transaction_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(gt=0, lt=1e9, description="in `currency`, strictly positive")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    channel: Literal["pos", "contactless", "ecom"]
    country: str = Field(pattern=r"^[A-Z]{2}$")
    event_time: datetime | None = Field(default=None, description="default: now (UTC)")


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


@dataclass(frozen=True)
class LoadedModel:
    version: int
    booster: object
    columns: list[str]


class ModelHolder:
    """The region's current champion; `current` is swapped atomically when the alias moves."""

    def __init__(self, region: str, client, load):
        self.region = region
        self._client = client
        self._load = load  # version -> booster
        self.current: LoadedModel | None = None
        self.last_error: str | None = None

    def refresh(self) -> bool:
        """Load the alias's version if it moved; True when a new model was swapped in."""
        version = registry.alias_version(self._client, registry.model_name(self.region), registry.CHAMPION)
        if version is None or (self.current is not None and self.current.version == version):
            return False
        booster = self._load(self.region, version)
        self.current = LoadedModel(version, booster, booster.feature_name())
        return True


class RegionService:
    def __init__(self, region: Region, store: OnlineStore, models: ModelHolder, rates: dict[str, float]):
        self.region = region
        self.store = store
        self.models = models
        self.rates = rates
        self.zone = ZoneInfo(region.timezone)

    def request_features(self, txn: Transaction, at: datetime) -> dict[str, float]:
        """TRANSACTION_FEATURES, computed as meridian.modeling.transaction_entities_sql does (tested)."""
        if txn.currency not in self.rates:
            raise HTTPException(422, detail=f"currency: unknown currency {txn.currency!r}")
        return {
            "amount_usd": round(txn.amount / self.rates[txn.currency], 4),
            "is_ecom": float(txn.channel == "ecom"),
            "is_contactless": float(txn.channel == "contactless"),
            "is_foreign": float(txn.country not in self.region.countries),
            "local_hour": float(at.astimezone(self.zone).hour),
        }

    def view_features(self, txn: Transaction, now_us: int) -> tuple[dict[str, object], dict[str, str]]:
        spend = self.store.read("customer_spend", txn.customer_id)
        if spend is None:
            raise HTTPException(404, detail=f"customer {txn.customer_id!r} is unknown in {self.region.name}")
        risk = self.store.read("merchant_risk", txn.merchant_id)
        values: dict[str, object] = {}
        for view, row in ((VIEWS["customer_spend"], spend), (VIEWS["merchant_risk"], risk)):
            for name, value in serve(view, row, now_us).items():
                values[view.column(name)] = value
        # A merchant the store has not seen is served the view's defaults, of the current version.
        return values, {
            "customer_spend": spend.version,
            "merchant_risk": risk.version if risk else VIEWS["merchant_risk"].version,
        }


def _rates() -> dict[str, float]:
    with open(CURRENCY_SEED) as handle:
        return {row["currency"]: float(row["units_per_usd"]) for row in csv.DictReader(handle)}


def create_app(
    topology: Topology,
    open_store,
    mlflow_client,
    load_model,
    home=None,
    poll_seconds: float = 2.0,
    regions: list[str] | None = None,
) -> FastAPI:
    """The service for `regions` (default: every active region).

    `open_store(region_paths)` opens a region's online store; `load_model(region, version)`
    loads a registered version's booster. /readyz is 200 when every served region has a
    model and a reachable store.
    """
    rates = _rates()
    served = regions or topology.active_region_names
    unknown = [r for r in served if r not in topology.active_region_names]
    if unknown:
        raise ValueError(
            f"cannot serve unknown or standby regions {unknown}; active: {topology.active_region_names}"
        )
    services: dict[str, RegionService] = {}
    for region in (topology.region(name) for name in served):
        holder = ModelHolder(region.name, mlflow_client, load_model)
        try:
            holder.refresh()
        except Exception as error:  # not ready until a model loads; /readyz says why
            holder.last_error = f"{type(error).__name__}: {error}"
        services[region.name] = RegionService(region, open_store(region_paths(region, home)), holder, rates)

    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(poll_seconds):
            for service in services.values():
                try:
                    service.models.refresh()
                    service.models.last_error = None
                except Exception as error:  # keep serving the model we have
                    service.models.last_error = f"{type(error).__name__}: {error}"

    app = FastAPI(title="Meridian scoring", version="1")
    app.state.services = services
    app.state.stop_polling = stop
    threading.Thread(target=poll, name="alias-poller", daemon=True).start()

    def service_for(region: str) -> RegionService:
        if region not in services:
            raise HTTPException(
                404, detail=f"region {region!r} is not served here; regions: {sorted(services)}"
            )
        return services[region]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "a served region has no model or no online store"}})
    def readyz() -> dict[str, object]:
        status = {}
        for name, service in services.items():
            model = service.models.current
            try:
                service.store.ping()
                store = "ok"
            except OnlineStoreUnavailable as error:
                store = str(error)
            status[name] = {"model_version": model.version if model else None, "online_store": store}
        if any(s["model_version"] is None or s["online_store"] != "ok" for s in status.values()):
            raise HTTPException(503, detail=status)
        return status

    errors = {
        404: {"description": "region not served here, or customer unknown to the region"},
        422: {"description": "invalid request: the body names the field"},
        503: {"description": "no model loaded for the region, or its online store is unavailable"},
    }

    @app.post("/v1/{region}/score", response_model=Score, responses=errors)
    def score(txn: Transaction, region: str = Path(pattern=r"^[a-z]+-[a-z]+$")) -> Score:
        started = time.perf_counter()
        service = service_for(region)
        model = service.models.current
        if model is None:
            raise HTTPException(
                503, detail=f"no champion model is loaded for {region}: {service.models.last_error}"
            )
        at = txn.event_time or datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        try:
            values, versions = service.view_features(txn, to_micros(at))
        except OnlineStoreUnavailable as error:
            raise HTTPException(503, detail=f"online store unavailable: {error}") from error
        values.update(service.request_features(txn, at))
        row = np.array([[_number(values[c]) for c in model.columns]], dtype=np.float64)
        probability = float(model.booster.predict(row, num_threads=1)[0])
        return Score(
            request_id=str(uuid.uuid4()),
            region=region,
            transaction_id=txn.transaction_id,
            score=probability,
            model_name=registry.model_name(region),
            model_version=model.version,
            variant="champion",
            feature_versions=versions,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @app.get("/v1/{region}/features/{customer_id}", responses=errors)
    def features(region: str, customer_id: str) -> dict[str, object]:
        service = service_for(region)
        try:
            row = service.store.read("customer_spend", customer_id)
        except OnlineStoreUnavailable as error:
            raise HTTPException(503, detail=f"online store unavailable: {error}") from error
        if row is None:
            raise HTTPException(404, detail=f"customer {customer_id!r} is unknown in {region}")
        view = VIEWS["customer_spend"]
        return {
            "region": region,
            "customer_id": customer_id,
            "view": view.name,
            "version": row.version,
            "event_time": datetime.fromtimestamp(row.event_time_us / 1e6, UTC).isoformat(),
            "features": serve(view, row, to_micros(datetime.now(UTC))),
        }

    return app


def _number(value: object) -> float:
    if value is None:
        return float("nan")
    return float(value)
