"""Real-time scoring: online features + the region's models over HTTP.

    POST /v1/{region}/score               a transaction → features → model → score
    GET  /v1/{region}/features/{customer} the customer's served features
    GET  /healthz                         the process is up
    GET  /readyz                          every region has a model and a reachable online store

A request for region R is answered with R's online store and R's models only; a customer
R has never seen is a 404, never a lookup elsewhere. Request features are computed
exactly as the offline SQL computes them (meridian.modeling.transaction_entities_sql):
amount in USD from the same currency seed, e-commerce / contactless channel, card used
outside the region's countries, local hour in the region's time zone. The customer's
online row is folded with the transaction (meridian.push), as offline, and the folded row
is pushed back to the online store in the background.

Models come from the MLflow registry by alias (`champion`, `challenger`). A background
thread polls the aliases and the region's deployment config (meridian.deployment); when
an alias moves, the new version is loaded beside the old one and swapped in with one
reference assignment, so requests in flight finish on the model they started with and
none fails during the swap. The deployment config picks who answers: the champion, an
A/B split, a canary share, or the champion with the challenger scored in shadow.

Every response is appended to the region's stream log (meridian.stream_log) without
waiting for the disk; Dagster assets micro-batch it into the lake.

Failover (meridian.dr): the poller also watches the control plane's failover state.
When region R is failed over to its DR region D, R's service is rebuilt on D's site —
the read replica of R's online store, the registry replica's models (loaded from the
replica's files, not from MLflow), the replicated deployment config, a stream log at D —
and swapped in as one reference; responses say which site answered (`site`). When R's
own storage root disappears, R answers 503 until the failover lands, never from a
storage it has lost. Failback swaps R's own site back in the same way.

Online store unavailable: 503 with the store's error, no fallback. A score from default
features would be a silently different model; callers (the card authoriser) own the
fallback rule for an unscored transaction.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from meridian import deployment, dr, registry
from meridian.countries import ISO_COUNTRIES
from meridian.feature_store import feature_history_path, read_complete_from
from meridian.feature_views import feature_views
from meridian.generator import CATEGORIES, HISTORY_START, USD_RATES
from meridian.online_store import (
    OnlineRow,
    OnlineStore,
    OnlineStoreUnavailable,
    StoreReplaced,
    serve,
    to_micros,
)
from meridian.paths import meridian_home
from meridian.push import PushQueue, fold
from meridian.stream_log import StreamLogWriter, stream_dir
from meridian.topology import Region, Topology
from meridian.validation import (
    MAX_AMOUNT_USD,
    MAX_CLOCK_SKEW,
    MAX_LATENESS,
    check_event_time,
    currency_rates,
)

log = logging.getLogger("meridian.serving")

VIEWS = {view.name: view for view in feature_views()}


class Transaction(BaseModel):
    """A transaction to score. `transaction_model(region)` narrows currency to the region's."""

    transaction_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    merchant_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(gt=0, lt=1e9, allow_inf_nan=False, description="in `currency`, strictly positive")
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


@dataclass(frozen=True)
class LoadedModel:
    version: int
    booster: object
    columns: list[str]

    def predict(self, values: dict[str, object]) -> float:
        row = np.array([[_number(values[c]) for c in self.columns]], dtype=np.float64)
        return float(self.booster.predict(row, num_threads=1)[0])


class ModelHolder:
    """The region's models by alias; each is swapped atomically when its alias moves.

    `models` is replaced as a whole (one reference assignment), so a request reads one
    consistent {alias: model} snapshot even while a swap happens. A version already loaded
    under either alias is reused, not loaded again.
    """

    ALIASES = (registry.CHAMPION, registry.CHALLENGER)

    def __init__(self, region: str, client, load):
        self.region = region
        self._client = client
        self._load = load  # (region, version) -> booster
        self.models: dict[str, LoadedModel] = {}
        self.last_error: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self.models.get(registry.CHAMPION)

    def refresh(self) -> bool:
        """Load every alias whose version moved; True when anything was swapped in."""
        name = registry.model_name(self.region)
        held = self.models
        by_version = {m.version: m for m in held.values()}
        fresh: dict[str, LoadedModel] = {}
        for alias in self.ALIASES:
            version = registry.alias_version(self._client, name, alias)
            if version is None:
                continue
            model = by_version.get(version)
            if model is None:
                booster = self._load(self.region, version)
                model = LoadedModel(version, booster, booster.feature_name())
                by_version[version] = model
            fresh[alias] = model
        if {a: m.version for a, m in fresh.items()} == {a: m.version for a, m in held.items()}:
            return False
        self.models = fresh
        return True


class ServedStore:
    """The region's online store as the service holds it: probed, never created, followed.

    The service opens the store without creating it: a missing file is a failed readiness
    check naming the file, never a new empty store that answers "unknown customer" for
    everyone. `check` (every poll interval) probes it with a real lookup on a fresh
    connection, so a store moved away, deleted, overwritten or corrupted is noticed even
    though open connections would keep reading the old file; while `error` is set every
    read raises OnlineStoreUnavailable (503). A store that comes back (the same file, or a
    new one at the path) is reopened and served again.
    """

    def __init__(self, open_store):
        self._open = open_store
        self._store: OnlineStore | None = None
        self.error: str | None = "not checked yet"
        self.check()

    def check(self) -> str | None:
        had_error = self.error is not None
        if self._store is None:
            try:
                self._store = self._open()
            except Exception as error:  # missing, unreadable, unreachable: not ready, retried
                self.error = str(error) if isinstance(error, OnlineStoreUnavailable) else repr(error)
                return self.error
        try:
            try:
                self._store.probe()
                if had_error and hasattr(self._store, "reopen"):
                    self._store.reopen()  # connections opened before the fault read stale state
            except StoreReplaced:
                self._store.reopen()  # a file put back or swapped in: follow it (new connections)
                self._store.probe()
            self.error = None
        except OnlineStoreUnavailable as error:
            self.error = str(error)
        return self.error

    def _current(self) -> OnlineStore:
        if self.error is not None or self._store is None:
            raise OnlineStoreUnavailable(self.error or "online store is not open")
        return self._store

    def read(self, view: str, entity: str) -> OnlineRow | None:
        return self._current().read(view, entity)

    def read_many(self, view, entities):
        return self._current().read_many(view, entities)

    def write(self, rows):
        return self._current().write(rows)

    def write_frame(self, view, version, frame):
        return self._current().write_frame(view, version, frame)

    def count(self, view: str) -> int:
        return self._current().count(view)

    def iter_rows(self, view: str):
        return self._current().iter_rows(view)

    def ping(self) -> None:
        self._current().ping()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class RegionService:
    def __init__(
        self,
        region: Region,
        store: ServedStore,
        models: ModelHolder,
        rates: dict[str, float],
        region_root,
        stream: StreamLogWriter | None,
        push: PushQueue | None,
        site: str | None = None,
    ):
        self.region = region
        self.site = site or region.name
        self.down: str | None = None  # why the region's own storage is unusable, while it is
        self.store = store
        self.models = models
        self.rates = rates
        self.zone = ZoneInfo(region.timezone)
        self.region_root = region_root
        self.stream = stream
        self.push = push
        self.deployment = deployment.load(region_root, region.name)
        self._deployment_stamp = self._config_stamp()
        self.complete_from_us: int | None = None  # first event time whose feature windows are full
        self._history_stamp: tuple[int, int] | None = None
        self.refresh_history()

    def refresh_history(self) -> bool:
        """Re-read when the region's feature windows are complete (written by `online_features`)."""
        try:
            stat = feature_history_path(self.region_root).stat()
            stamp = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self._history_stamp:
            return False
        warm_from = read_complete_from(self.region_root)
        self.complete_from_us = to_micros(warm_from.replace(tzinfo=UTC)) if warm_from else None
        self._history_stamp = stamp
        return True

    def unavailable(self) -> str | None:
        """Why the region cannot answer now (its storage is gone, its store is lost), else None."""
        return self.down or self.store.error

    def features_complete(self, at_us: int) -> bool:
        """The transaction's feature windows are covered by history (unknown history: no)."""
        return self.complete_from_us is not None and at_us >= self.complete_from_us

    def _config_stamp(self) -> tuple[int, int] | None:
        """(inode, mtime): every atomic rewrite is a new inode, even within one clock tick."""
        try:
            stat = deployment.config_path(self.region_root).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def refresh_deployment(self) -> bool:
        """Re-read the deployment config when its file changed (written atomically by the asset)."""
        stamp = self._config_stamp()
        if stamp == self._deployment_stamp:
            return False
        self.deployment = deployment.load(self.region_root, self.region.name)
        self._deployment_stamp = stamp
        return True

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

    def customer_row(self, customer_id: str) -> OnlineRow | None:
        """The customer's latest row: a push not yet written, else the store's."""
        view = VIEWS["customer_spend"].name
        pending = self.push.latest(view, customer_id) if self.push else None
        stored = self.store.read(view, customer_id)
        if pending is None or (stored is not None and stored.event_time_us > pending.event_time_us):
            return stored
        return pending

    def view_features(
        self, txn: Transaction, amount_usd: float, at_us: int
    ) -> tuple[dict[str, object], dict[str, str], OnlineRow | None]:
        """Every view's features for this transaction, and the folded customer row to push.

        The customer's row is folded with this transaction (meridian.push.fold), as the
        offline row of a transaction includes it. A transaction older than the stored row
        (out of order) is scored on the stored row and pushes nothing.
        """
        spend_view, risk_view = VIEWS["customer_spend"], VIEWS["merchant_risk"]
        base = self.customer_row(txn.customer_id)
        if base is None:
            raise HTTPException(404, detail=f"customer {txn.customer_id!r} is unknown in {self.region.name}")
        folded = None
        if base.event_time_us <= at_us:
            folded = fold(
                base,
                spend_view.name,
                spend_view.version,
                txn.customer_id,
                at_us,
                amount_usd,
                txn.merchant_id,
                txn.device_id,
            )
            spend = serve(spend_view, folded, at_us)
        else:
            spend = serve(spend_view, base, base.event_time_us)
        risk_row = self.store.read(risk_view.name, txn.merchant_id)
        values: dict[str, object] = {spend_view.column(n): v for n, v in spend.items()}
        for name, value in serve(risk_view, risk_row, at_us).items():
            values[risk_view.column(name)] = value
        # A merchant the store has not seen is served the view's defaults, of the current version.
        versions = {
            spend_view.name: folded.version if folded else base.version,
            risk_view.name: risk_row.version if risk_row else risk_view.version,
        }
        return values, versions, folded


def create_app(
    topology: Topology,
    open_store,
    mlflow_client,
    load_model,
    home=None,
    poll_seconds: float = 2.0,
    regions: list[str] | None = None,
    stream_log: bool = True,
    push: bool = True,
) -> FastAPI:
    """The service for `regions` (default: every active region).

    `open_store(region_paths)` opens a region's online store; `load_model(region, version)`
    loads a registered version's booster. /readyz is 200 when every served region has a
    model and a reachable store. `stream_log` appends every decision to the region's
    stream log; `push` folds each scored transaction into the online store.
    """
    rates = currency_rates()
    served = regions or topology.active_region_names
    unknown = [r for r in served if r not in topology.active_region_names]
    if unknown:
        raise ValueError(
            f"cannot serve unknown or standby regions {unknown}; active: {topology.active_region_names}"
        )
    home = home or meridian_home()

    def build(region: Region) -> RegionService:
        paths = dr.active_paths(topology, home, region.name)
        if paths.host == region.name:
            holder = ModelHolder(region.name, mlflow_client, load_model)
        else:  # failed over: models from the registry replica at the DR site
            holder = ModelHolder(
                region.name,
                dr.ReplicaRegistryClient(paths.root),
                lambda _region, version, root=paths.root: dr.load_replica_booster(root, version),
            )
        try:
            holder.refresh()
        except Exception as error:  # not ready until a model loads; /readyz says why
            holder.last_error = f"{type(error).__name__}: {error}"
        store = ServedStore(lambda: open_store(paths))
        return RegionService(
            region,
            store,
            holder,
            rates,
            paths.root,
            StreamLogWriter(stream_dir(paths.root)) if stream_log else None,
            PushQueue(store) if push else None,
            site=paths.host,
        )

    services: dict[str, RegionService] = {name: build(topology.region(name)) for name in served}

    def retire(service: RegionService) -> None:
        if service.push:
            service.push.close()
        if service.stream:
            service.stream.close()

    def failover_stamp() -> tuple[int, int] | None:
        try:
            stat = dr.state_path(home).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    stamp = [failover_stamp()]
    stop = threading.Event()

    def follow_failover() -> None:
        """Swap a region's service when the control plane moved it to another site."""
        current = failover_stamp()
        for name, service in list(services.items()):
            if current != stamp[0]:
                site = dr.active_paths(topology, home, name).host
                if site != service.site:
                    fresh = build(service.region)
                    services[name] = fresh  # one reference: requests in flight keep the old one
                    log.warning("%s is now served from %s", name, site)
                    threading.Thread(target=retire, args=(service,), daemon=True).start()
                    continue
            # The region's own site lost its storage: stop answering from what is left open.
            service.down = (
                None
                if service.region_root.is_dir()
                else f"storage of {service.site} at {service.region_root} is unreachable; failover pending"
            )
        stamp[0] = current

    def poll() -> None:
        while not stop.wait(poll_seconds):
            try:
                follow_failover()
            except Exception as error:  # keep serving where we are
                log.error("failover state unreadable: %s", error)
            for service in services.values():
                try:
                    service.store.check()  # a lost, corrupt or returned store within one interval
                except Exception as error:  # never let the poller die
                    log.error("online store check of %s failed: %s", service.region.name, error)
                try:
                    service.models.refresh()
                    service.models.last_error = None
                except Exception as error:  # keep serving the models we have
                    service.models.last_error = f"{type(error).__name__}: {error}"
                try:
                    service.refresh_history()
                except Exception as error:  # keep what we knew
                    log.error("feature history of %s unreadable: %s", service.region.name, error)
                try:
                    service.refresh_deployment()
                except Exception as error:  # keep the config we have
                    log.error(
                        "deployment config of %s unreadable, keeping the last one: %s",
                        service.region.name,
                        error,
                    )

    def shutdown() -> None:
        stop.set()
        for service in services.values():
            retire(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        shutdown()  # queued log entries and pushes are written before the process exits

    app = FastAPI(title="Meridian scoring", version="1", lifespan=lifespan)
    app.state.services = services
    app.state.stop_polling = stop
    app.state.shutdown = shutdown
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
            models = service.models.models
            store = service.unavailable()
            if store is None:
                try:
                    service.store.ping()
                    store = "ok"
                except OnlineStoreUnavailable as error:
                    store = str(error)
            config = service.deployment
            status[name] = {
                "site": service.site,
                "model_version": models[registry.CHAMPION].version if registry.CHAMPION in models else None,
                "challenger_version": models[registry.CHALLENGER].version
                if registry.CHALLENGER in models
                else None,
                "strategy": config.strategy,
                "experiment_id": config.experiment_id,
                "challenger_share": config.challenger_share,
                "online_store": store,
                "stream_log_dropped": service.stream.dropped if service.stream else 0,
                "pending_pushes": service.push.pending if service.push else 0,
            }
        if any(s["model_version"] is None or s["online_store"] != "ok" for s in status.values()):
            raise HTTPException(503, detail=status)
        return status

    errors = {
        404: {"description": "region not served here, or customer unknown to the region"},
        415: {"description": "the body is not JSON (Content-Type must be application/json, UTF-8)"},
        422: {"description": "invalid request: the body names the field"},
        503: {"description": "no model loaded for the region, or its storage or online store is unavailable"},
    }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> Response:
        # FastAPI's own handler echoes each bad input back, and fails on the inputs an
        # attacker sends (NaN, 1e999, 5,000-digit numbers, bytes that are not UTF-8): the
        # error document names the field and the problem, never the value.
        return _json(422, {"detail": [_error_entry(e) for e in error.errors()]})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return _json(error.status_code, {"detail": error.detail}, getattr(error, "headers", None))

    # The hot path parses its own body (pydantic's JSON validator, in Rust) and returns
    # pre-serialized JSON: FastAPI's generic body and response handling cost more than the
    # scoring itself. Each served region has its own route, whose schema is exact: its
    # currencies are the region's (as the lake validates them), so a body the schema calls
    # valid is one the service takes. Validation errors are FastAPI's 422 shape, naming the field.
    def score_route(name: str):
        model = transaction_model(topology.region(name))

        async def score(request: Request) -> Response:
            return await score_one(request, name, model)

        app.add_api_route(
            f"/v1/{name}/score",
            score,
            methods=["POST"],
            name=f"score_{name.replace('-', '_')}",
            summary=f"Score a transaction in {name}",
            response_model=Score,
            responses=errors,
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": model.model_json_schema()}},
                }
            },
        )

    async def score_one(request: Request, region: str, model: type[Transaction]) -> Response:
        started = time.perf_counter()
        service = service_for(region)
        media = request.headers.get("content-type", "")
        kind, _, params = media.partition(";")
        kind = kind.strip().lower()
        charset = params.lower().replace(" ", "").partition("charset=")[2].strip('"')
        if not (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))):
            raise HTTPException(415, detail=f"Content-Type must be application/json, got {media[:100]!r}")
        if charset not in ("", "utf-8", "utf8"):
            raise HTTPException(415, detail=f"the body must be UTF-8 JSON, got charset {charset[:40]!r}")
        if reason := service.unavailable():
            raise HTTPException(503, detail=f"region {region} unavailable: {reason}")
        try:
            txn = model.model_validate_json(await request.body())
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from error
        models = service.models.models  # one snapshot for the whole request
        champion = models.get(registry.CHAMPION)
        if champion is None:
            raise HTTPException(
                503, detail=f"no champion model is loaded for {region}: {service.models.last_error}"
            )
        config = service.deployment
        at = txn.event_time or datetime.now(UTC)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        at_us = to_micros(at)
        request = service.request_features(txn, at)
        try:
            values, versions, folded = service.view_features(txn, request["amount_usd"], at_us)
        except OnlineStoreUnavailable as error:
            raise HTTPException(503, detail=f"online store unavailable: {error}") from error
        values.update(request)
        challenger = models.get(registry.CHALLENGER) if config.scores_challenger else None
        variant = config.variant(txn.customer_id)
        fallback = None
        if variant == registry.CHALLENGER and challenger is None:
            variant, fallback = registry.CHAMPION, "challenger alias not loaded: answered by the champion"
        answering = challenger if variant == registry.CHALLENGER else champion
        probability = answering.predict(values)
        shadow = None
        if config.strategy == "shadow" and challenger is not None:
            shadow = {"variant": registry.CHALLENGER, "model_version": challenger.version}
            shadow["score"] = challenger.predict(values)
        if folded is not None and service.push is not None:
            service.push.push(folded)
        result = {
            "request_id": str(uuid.uuid4()),
            "region": region,
            "transaction_id": txn.transaction_id,
            "score": probability,
            "model_name": registry.model_name(region),
            "model_version": answering.version,
            "variant": variant,
            "feature_versions": versions,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "site": service.site,
            # False while the customer's windows cannot be full yet (young history): such a
            # decision is no evidence for drift, performance or A/B analysis.
            "features_complete": service.features_complete(at_us),
        }
        if service.stream is not None:
            service.stream.append(
                {
                    **result,
                    "served_at": datetime.now(UTC),
                    "strategy": config.strategy,
                    "experiment_id": config.experiment_id,
                    "challenger_share": config.challenger_share,
                    "shadow": shadow,
                    "fallback": fallback,
                    "transaction": {**txn.__dict__, "event_time": at},
                    # The model's inputs as scored, for drift of what was served.
                    "features": {c: values[c] for c in answering.columns},
                }
            )
        return Response(orjson.dumps(result), media_type="application/json")

    for name in served:
        score_route(name)

    @app.post("/v1/{region}/score", include_in_schema=False)
    async def score_elsewhere(region: str) -> Response:
        service_for(region)  # 404: a region this service does not serve
        raise HTTPException(404, detail=f"region {region!r} is not served here")

    @app.get("/v1/{region}/features/{customer_id}", responses=errors)
    def features(region: str, customer_id: str) -> dict[str, object]:
        service = service_for(region)
        if reason := service.unavailable():
            raise HTTPException(503, detail=f"region {region} unavailable: {reason}")
        try:
            row = service.customer_row(customer_id)
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


def _text(value: object) -> str:
    """Any value as text that is valid UTF-8 (lone surrogates replaced)."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _error_entry(error: dict) -> dict[str, object]:
    return {
        "loc": [part if isinstance(part, int) else _text(part) for part in error.get("loc", ())],
        "msg": _text(error.get("msg", "")),
        "type": _text(error.get("type", "")),
    }


def _json_safe(value: object) -> object:
    if isinstance(value, dict):
        return {_text(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _text(value)


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(_json_safe(body)), status_code=status, media_type="application/json", headers=headers
    )


def _number(value: object) -> float:
    if value is None:
        return float("nan")
    return float(value)
