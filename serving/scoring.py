"""The scoring of one transaction: a plain function the HTTP layer, the benchmark and the tests call.

`score_transaction` takes a region's service and a validated transaction and does all a
request does: request features, the customer's online row folded with the transaction,
the merchant's row, the deployment's choice of model (champion, A/B, canary, shadow),
one-row predictions, the folded row pushed back and the decision appended to the stream
log. It blocks (store reads, LightGBM): the HTTP layer runs it off the event loop.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime

from meridian import registry
from meridian.online_store import OnlineStoreUnavailable, to_micros
from serving.region_service import RegionService, ScoringRefused
from serving.schemas import Transaction


class _RequestIds:
    """Request ids unique as uuid4's are, cheaper: this process's random 96-bit prefix and a
    counter. `uuid4()` makes a getrandom call and a UUID object per request: 6 % of the event
    loop's CPU under closed-loop load (py-spy). A forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(12).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):012x}"


REQUEST_IDS = _RequestIds()


def score_transaction(service: RegionService, txn: Transaction, started: float | None = None) -> dict:
    """The response document for `txn` in `service`'s region; raises ScoringRefused (404, 422, 503).

    `started` (a `time.perf_counter()` reading) is when the request arrived, for `latency_ms`.
    """
    started = time.perf_counter() if started is None else started
    region = service.region.name
    if reason := service.unavailable():
        raise ScoringRefused(503, f"region {region} unavailable: {reason}")
    models = service.models.models  # one snapshot for the whole request
    champion = models.get(registry.CHAMPION)
    if champion is None:
        why = service.models.last_error or "none is registered yet (`meridian run` trains and promotes one)"
        raise ScoringRefused(503, f"no champion model is loaded for {region}: {why}")
    config = service.deployment
    at = txn.event_time or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    at_us = to_micros(at)
    request = service.request_features(txn, at)
    try:
        values, versions, folded = service.view_features(txn, request["amount_usd"], at_us)
    except OnlineStoreUnavailable as error:
        raise ScoringRefused(503, f"online store unavailable: {error}") from error
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
        "request_id": REQUEST_IDS.next(),
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
    return result
