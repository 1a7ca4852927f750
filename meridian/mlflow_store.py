"""A new embedded MLflow store (SQLite) starts as a copy of its schema, made once per MLflow version.

MLflow creates a SQLite store's schema on its first use: its first tables, then every Alembic
migration since, one by one (1.7 s here). Every fresh MERIDIAN_HOME paid it before any region
could train: the main command once, before its regions fan out, and the test suite ~20 times.
The schema is the installed MLflow's, the same for every store, so it is made once, with
MLflow's own table creation, into a template in the user's cache, and a new store is a copy
of it. The template holds no row but Alembic's version: MLflow adds its default experiment,
with this store's own artifact location, when it first opens the copy, as it does for a store
it created itself. An existing store is never touched, and when the cache cannot be written
MLflow creates the schema as before.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from meridian.lake import atomic_target
from meridian.locks import file_lock


def template_path() -> Path:
    import mlflow

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "meridian"
    return cache / f"mlflow-{mlflow.__version__}-sqlite-schema.db"


def _build_template(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs for a new store

    with atomic_target(path) as tmp:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()


def seed_sqlite_store(db_path: Path) -> bool:
    """Put a copy of the schema template at `db_path` when no store is there; True if it did.

    The caller holds the store's initialisation lock, so no other process is creating it."""
    if db_path.exists():
        return False
    try:
        template = template_path()
        if not template.exists():
            with file_lock(template.with_name(template.name + ".lock"), timeout_s=300):
                if not template.exists():
                    _build_template(template)
        with atomic_target(db_path) as tmp:
            shutil.copyfile(template, tmp)
    except Exception:  # an optimisation only: no writable cache, no home folder,
        # or an MLflow whose table creation moved; MLflow then creates the schema itself
        return False
    return True
