"""Build the scoring service from the environment (the same settings as the Dagster resources).

meridian serve [--port 8000]        # after `meridian run`, on the embedded default
"""

from __future__ import annotations

import os

from fastapi import FastAPI


def build_app(
    poll_seconds: float = 2.0, regions: list[str] | None = None, stream_log: bool = True, push: bool = True
) -> FastAPI:
    import mlflow

    from meridian.paths import meridian_home
    from meridian.topology import load_topology
    from resources.mlflow import MlflowTrackingResource
    from resources.online_store import OnlineStoreResource
    from serving.app import create_app

    tracking = MlflowTrackingResource(tracking_uri=os.environ.get("MERIDIAN_MLFLOW_TRACKING_URI"))
    tracking.preflight()
    store = OnlineStoreResource(
        backend=os.environ.get("MERIDIAN_ONLINE_STORE", "sqlite"),
        redis_url=os.environ.get("MERIDIAN_REDIS_URL"),
    )

    def load_model(region: str, version: int):
        return mlflow.lightgbm.load_model(f"models:/fraud-{region}/{version}")

    return create_app(
        load_topology(os.environ.get("MERIDIAN_TOPOLOGY")),
        store.open,
        tracking.client(),
        load_model,
        home=meridian_home(),
        poll_seconds=poll_seconds,
        regions=regions,
        stream_log=stream_log,
        push=push,
    )
