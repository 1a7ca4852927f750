"""Feast's get_historical_features on the pit_join benchmark data (runs in Feast's own venv).

Kept apart from pit_join.py because it runs under a different interpreter: Feast's pins
clash with the project's, so benchmarks/pit_join.py builds a virtual environment for it.
Feature tables arrive as Parquet files exported by pit_join.py; the result is written
as Parquet with the same column names Meridian uses (`<view>__<feature>`), and the time
of the retrieval itself (get_historical_features to a Parquet file) beside it.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.types import Float64, Int64

# The same views as benchmarks/pit_join.py: name, entity key, TTL, features with types
# (customer_spend: its one-view data set; the other three: its three-view data set).
VIEWS = {
    "customer_spend": ("customer_id", timedelta(days=30), {"f1": Float64, "f2": Int64}),
    "spend": ("customer_id", timedelta(days=7), {"f1": Float64, "f2": Int64}),
    "velocity": ("customer_id", timedelta(days=2), {"f3": Float64}),
    "risk": ("merchant_id", timedelta(days=30), {"f4": Float64}),
}


def main(work: Path, out: Path, names: list[str]) -> None:
    repo = work / "feast-repo"
    repo.mkdir(exist_ok=True)
    config = RepoConfig(
        project="meridian_bench",
        registry=str(repo / "registry.db"),
        provider="local",
        offline_store=DuckDBOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(repo / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    entities = {
        key: Entity(name=key.removesuffix("_id"), join_keys=[key], value_type=ValueType.INT64)
        for key in ("customer_id", "merchant_id")
    }
    views = []
    chosen = {name: VIEWS[name] for name in names}
    for name, (key, ttl, features) in chosen.items():
        source = FileSource(
            path=str(work / f"{name}.parquet"), timestamp_field="ts", created_timestamp_column="created"
        )
        views.append(
            FeatureView(
                name=name,
                entities=[entities[key]],
                ttl=ttl,
                schema=[Field(name=f, dtype=t) for f, t in features.items()],
                source=source,
            )
        )
    used = {key for key, _, _ in chosen.values()}
    store.apply([*(e for k, e in entities.items() if k in used), *views])
    labels = pd.read_parquet(work / "labels.parquet")
    labels["event_timestamp"] = pd.to_datetime(labels["event_time"], utc=True)
    refs = [f"{name}:{f}" for name, (_, _, features) in chosen.items() for f in features]
    started = time.perf_counter()
    result = store.get_historical_features(entity_df=labels, features=refs, full_feature_names=True).to_df()
    result.to_parquet(out)
    seconds = time.perf_counter() - started
    out.with_suffix(".seconds").write_text(f"{seconds:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else list(VIEWS))
