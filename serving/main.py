"""Build the scoring service from the environment (the same settings as the Dagster resources).

meridian serve [--port 8000]        # after `meridian run`, on the embedded default
"""

from __future__ import annotations

from fastapi import FastAPI

# The service's Redis timeout. A read runs on the event loop (serving/app.py SCORING_THREADS),
# so a frozen Redis (a hung host, a blackholed link) holds every region's requests for up to
# this long; the served store then trips (serving/store.py) and answers 503 at once until the
# poller's probe sees the store answer again. Redis answers a keyed read in well under a
# millisecond; 0.25 s is a stall no healthy server comes near.
SERVING_STORE_TIMEOUT_S = 0.25


def online_store_resource(config):
    """The same online store the Dagster definitions write (production: always Redis)."""
    from meridian.topology import load_topology
    from resources.online_store import OnlineStoreResource

    return OnlineStoreResource.from_settings(
        config, load_topology(config.topology_path), timeout_seconds=SERVING_STORE_TIMEOUT_S
    )


def build_app(
    poll_seconds: float = 2.0,
    regions: list[str] | None = None,
    stream_log: bool = True,
    push: bool = True,
    scoring_threads: int | None = None,
) -> FastAPI:
    import mlflow

    from meridian.paths import meridian_home
    from meridian.settings import settings
    from meridian.topology import load_topology
    from resources.mlflow import MlflowTrackingResource
    from serving.app import SCORING_THREADS, create_app

    config = settings()
    if config.production:
        config.require_production_settings()
    tracking = MlflowTrackingResource(tracking_uri=config.mlflow_tracking_uri, home=config.home_override)
    tracking.preflight()
    store = online_store_resource(config)

    def load_model(region: str, version: int):
        return mlflow.lightgbm.load_model(f"models:/fraud-{region}/{version}")

    return create_app(
        load_topology(config.topology_path),
        lambda paths: store.open(paths, create=False),  # a missing store is not ready, never new
        tracking.client(),
        load_model,
        home=meridian_home(),
        poll_seconds=poll_seconds,
        regions=regions,
        stream_log=stream_log,
        push=push,
        scoring_threads=SCORING_THREADS if scoring_threads is None else scoring_threads,
    )
