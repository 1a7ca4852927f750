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
import os
import time
from datetime import UTC, datetime
from typing import Annotated

import anyio
import anyio.to_thread
import orjson
from fastapi import FastAPI, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from meridian import registry
from meridian.online_store import OnlineStoreUnavailable, serve, to_micros
from meridian.paths import meridian_home
from meridian.topology import Topology
from meridian.validation import (
    currency_rates,
)
from serving.region_service import RegionService, ScoringRefused
from serving.schemas import VIEWS, Score, Transaction, transaction_model
from serving.scoring import score_transaction
from serving.sites import RegionSites

log = logging.getLogger("meridian.serving")
# Scoring on the event loop (0) or on that many threads off it. Measured with
# benchmarks/serving.py --quick on 2 cores (one script, same bodies, wrk closed loop with 8
# connections): on the loop 3,966 requests/s, p99 4.3 ms; on 1 thread 2,126 requests/s, p99
# 6.9 ms. The GIL hand-off between the loop and a scoring thread costs more than the store
# read and the predict it moves (0.06 ms together in process), so the default scores on the
# loop. With a store whose reads can stall (a remote Redis), `--scoring-threads N` keeps one
# slow read from holding up every other request (tests/test_serving.py).
SCORING_THREADS = 0


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
    scoring_threads: int = SCORING_THREADS,
) -> FastAPI:
    """The service for `regions` (default: every active region).

    `open_store(region_paths)` opens a region's online store; `load_model(region, version)`
    loads a registered version's booster. /readyz is 200 when every served region has a
    model and a reachable store. `stream_log` appends every decision to the region's
    stream log; `push` folds each scored transaction into the online store.
    `scoring_threads` sizes the pool that scores off the event loop (0: on the loop).
    """
    rates = currency_rates()
    served = regions or topology.active_region_names
    unknown = [r for r in served if r not in topology.active_region_names]
    if unknown:
        raise ValueError(
            f"cannot serve unknown or standby regions {unknown}; active: {topology.active_region_names}"
        )
    home = home or meridian_home()

    sites = RegionSites(
        topology, home, served, open_store, mlflow_client, load_model, rates, stream_log=stream_log, push=push
    )
    services = sites.services  # the dict is updated in place when a region changes site
    # Scoring blocks (store reads, LightGBM). With scoring_threads it runs on that many
    # threads off the event loop, so one slow store read never holds up other requests.
    limiter = anyio.CapacityLimiter(scoring_threads) if scoring_threads else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        sites.shutdown()  # queued log entries and pushes are written before the process exits

    app = FastAPI(title="Meridian scoring", version="1", lifespan=lifespan, telemetry=_telemetry())
    app.state.services = services
    app.state.sites = sites
    app.state.stop_polling = sites.stop
    app.state.shutdown = sites.shutdown
    sites.start_polling(poll_seconds)

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
                "ended_experiment": config.ended_experiment,
                "ended_reason": config.ended_reason,
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

    @app.exception_handler(ScoringRefused)
    async def refused(_request: Request, error: ScoringRefused) -> Response:
        return _json(error.status, {"detail": error.detail})

    @app.exception_handler(OnlineStoreUnavailable)
    async def store_down(_request: Request, error: OnlineStoreUnavailable) -> Response:
        # Raised below the endpoints' own handling (a push, a read the probe did not catch):
        # still the store, never a 500.
        return _json(503, {"detail": f"online store unavailable: {error}"})

    @app.exception_handler(OSError)
    async def storage_down(_request: Request, error: OSError) -> Response:
        # A region's files vanishing or failing mid-request (the storage under a read).
        return _json(503, {"detail": f"storage unavailable: {type(error).__name__}: {error}"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return _json(error.status_code, {"detail": error.detail}, getattr(error, "headers", None))

    # The hot path. FastAPI's request handling (the endpoint's Request, its dependency
    # machinery, the Response object and its send wrappers) cost more than the scoring
    # itself: profiled under load (py-spy, benchmarks/serving.py), a third of the CPU of a
    # request. So each served region's score route is registered twice at one path:
    # - a bare ASGI route, first in the router, that answers every request: it reads the
    #   body (bounded by MAX_BODY_BYTES), validates it with pydantic's JSON validator (Rust)
    #   and sends pre-serialized JSON;
    # - the documented FastAPI route behind it (OpenAPI: its schema, its responses), which
    #   runs the same `score_body` and is reached only if the bare route is removed.
    # Both sit inside the app's middleware, so its error handlers above still shape every
    # error (422 naming the field, 415, 503, 404) and a middleware added to the app sees the
    # score routes too. The region's schema is exact: its currencies are the region's (as
    # the lake validates them), so a body the schema calls valid is one the service takes.
    async def score_body(region: str, model: type[Transaction], media: str, body: bytes, started: float):
        service = service_for(region)
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
            txn = model.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
            ) from error
        if limiter is None:
            result = score_transaction(service, txn, started)
        else:
            result = await anyio.to_thread.run_sync(score_transaction, service, txn, started, limiter=limiter)
        return orjson.dumps(result)

    def score_route(name: str):
        model = transaction_model(topology.region(name))
        path = f"/v1/{name}/score"

        async def bare(scope, receive, send) -> None:
            started = time.perf_counter()
            media = ""
            for key, value in scope["headers"]:
                if key == b"content-type":
                    media = value.decode("latin-1")
                    break
            body = await _read_body(receive)
            payload = await score_body(name, model, media, body, started)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(payload)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})

        async def documented(request: Request) -> Response:
            started = time.perf_counter()
            body = await _read_body(request.receive)
            payload = await score_body(name, model, request.headers.get("content-type", ""), body, started)
            return Response(payload, media_type="application/json")

        app.add_api_route(
            path,
            documented,
            methods=["POST"],
            name=f"score_{name.replace('-', '_')}",
            summary=f"Score a transaction in {name}",
            response_model=Score,
            responses={**errors, 413: {"description": f"the body is larger than {MAX_BODY_BYTES:,} bytes"}},
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": model.model_json_schema()}},
                }
            },
        )
        app.router.routes.insert(0, Route(path, _BareASGI(bare), methods=["POST"]))

    for name in served:
        score_route(name)

    @app.post("/v1/{region}/score", include_in_schema=False)
    async def score_elsewhere(region: str) -> Response:
        service_for(region)  # 404: a region this service does not serve
        raise HTTPException(404, detail=f"region {region!r} is not served here")

    @app.get("/v1/{region}/features/{customer_id}", responses=errors)
    def features(
        region: str, customer_id: Annotated[str, Path(min_length=1, max_length=64)]
    ) -> dict[str, object]:
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


def _telemetry() -> dict | None:
    """FastAPI's OpenTelemetry instrumentation if this process has OpenTelemetry set up, else off.

    FastAPI asks OpenTelemetry's global providers on every request whether any is configured
    (environment lookups included): 7 % of a scoring request's CPU under load, profiled, on a
    service that had none. A deployment that sets OpenTelemetry up does so before the app is
    built (`opentelemetry-instrument`, an SDK in the entry point) or asks FastAPI to
    (FASTAPI_OTEL_AUTO_CONFIGURE=true); then FastAPI's defaults apply unchanged.
    """
    from fastapi.telemetry._api import _unconfigured
    from opentelemetry import _logs, metrics, trace

    if os.getenv("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return None
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider())
    if not all(_unconfigured(p) for p in providers):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


# A transaction is a few hundred bytes; a body past this is refused (413) before it is read
# whole, so a client cannot make the service buffer megabytes per request.
MAX_BODY_BYTES = 64 * 1024


class _BareASGI:
    """A plain ASGI callable for a Starlette Route (a function would be wrapped as an endpoint)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


async def _read_body(receive) -> bytes:
    """The request body, refused with 413 as soon as it passes MAX_BODY_BYTES."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, detail="the client disconnected before the body was sent")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, detail=f"the body is larger than {MAX_BODY_BYTES:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
