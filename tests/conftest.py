"""Shared fixtures: every test that writes data gets its own MERIDIAN_HOME."""

from __future__ import annotations

import sys
from pathlib import Path

import hypothesis  # noqa: F401
import pytest

# hypothesis is imported here, at start-up, on purpose: when it is first imported by its
# pytest plugin at session end (a run without property tests), pytest's assertion
# rewriting of its modules trips CPython 3.11.7's "AST constructor recursion depth
# mismatch" SystemError after the threaded end-to-end tests.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture
def meridian_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "meridian-home"
    home.mkdir()
    monkeypatch.setenv("MERIDIAN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir()
    return home


@pytest.fixture(scope="session")
def topology():
    from meridian.topology import load_topology

    return load_topology()
