"""A new embedded MLflow store made from the schema template (meridian.mlflow_store) is the store
MLflow would have made itself, and an existing store is never replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import pytest

from meridian import mlflow_store
from resources.mlflow import MlflowTrackingResource

_CONSTRAINT = ("CONSTRAINT ", "FOREIGN KEY", "CHECK ", "PRIMARY KEY", "UNIQUE ")


def _clauses(sql: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A CREATE statement as its columns in order and its constraints as a set. MLflow's own
    migrations write a table's constraints in an order that changes from process to process
    (two stores MLflow made itself differ so), so only their set is compared."""
    lines = [line.strip().rstrip(",").strip() for line in sql.splitlines()]
    constraints = tuple(sorted(line for line in lines if line.startswith(_CONSTRAINT)))
    return tuple(line for line in lines if not line.startswith(_CONSTRAINT)), constraints


def _schema(db: Path) -> tuple[dict[str, tuple], list[tuple]]:
    with sqlite3.connect(db) as conn:
        objects = {
            name: _clauses(sql or "") for name, sql in conn.execute("select name, sql from sqlite_master")
        }
        version = conn.execute("select version_num from alembic_version").fetchall()
    return objects, version


def _default_experiment(db: Path) -> tuple[str, str]:
    experiment = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment("0")
    return experiment.name, experiment.artifact_location


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "meridian"


def test_a_store_from_the_template_is_the_store_mlflow_makes(tmp_path: Path, cache: Path):
    by_mlflow = tmp_path / "mlflow-made" / "mlflow.db"
    by_mlflow.parent.mkdir()
    _default_experiment(by_mlflow)  # MLflow creates the store on first use
    seeded = tmp_path / "seeded" / "mlflow.db"
    MlflowTrackingResource(tracking_uri=f"sqlite:///{seeded}").preflight()
    assert mlflow_store.template_path().parent == cache and mlflow_store.template_path().exists()
    assert _schema(seeded) == _schema(by_mlflow)
    # MLflow added its default experiment to the copy, with the location it gives a new store.
    assert _default_experiment(seeded) == _default_experiment(by_mlflow)
    # A second store is another copy, not the first one's file.
    other = tmp_path / "other" / "mlflow.db"
    MlflowTrackingResource(tracking_uri=f"sqlite:///{other}").preflight()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{other}", registry_uri=f"sqlite:///{other}")
    run = client.create_run(client.create_experiment("fraud-eu-west", artifact_location=str(tmp_path / "a")))
    client.log_metric(run.info.run_id, "pr_auc", 0.5)
    client.create_registered_model("fraud-eu-west")
    assert [e.name for e in mlflow.MlflowClient(tracking_uri=f"sqlite:///{seeded}").search_experiments()] == [
        "Default"
    ]


def test_an_existing_store_is_never_replaced(tmp_path: Path, cache: Path):
    db = tmp_path / "mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.create_registered_model("fraud-us-east")
    assert mlflow_store.seed_sqlite_store(db) is False
    MlflowTrackingResource(tracking_uri=f"sqlite:///{db}").preflight()
    assert [m.name for m in client.search_registered_models()] == ["fraud-us-east"]


def test_an_unwritable_cache_leaves_the_store_to_mlflow(tmp_path: Path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    assert mlflow_store.seed_sqlite_store(db) is False and not db.exists()
    MlflowTrackingResource(tracking_uri=f"sqlite:///{db}").preflight()
    assert _default_experiment(db)[0] == "Default"


def test_a_relative_sqlite_uri_is_seeded_where_mlflow_opens_it(tmp_path: Path, cache: Path, monkeypatch):
    """sqlite:///name is relative to the working directory for MLflow (SQLAlchemy): the copy,
    its folder and the initialisation lock go there, not under the file system's root."""
    folder = f"meridian-relative-{tmp_path.name}"
    monkeypatch.chdir(tmp_path)
    MlflowTrackingResource(tracking_uri=f"sqlite:///{folder}/mlflow.db").preflight()
    assert (tmp_path / folder / "mlflow.db").exists() and (tmp_path / folder / ".mlflow-init.lock").exists()
    assert not Path("/", folder).exists()
    assert _default_experiment(tmp_path / folder / "mlflow.db")[0] == "Default"
