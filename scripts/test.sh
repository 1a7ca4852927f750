#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is cached for the project's own modules too (each __pycache__ is git-ignored): with
# PYTHONDONTWRITEBYTECODE set, as on these machines, every process compiled assets/, meridian/
# and the tests again, and pytest re-wrote the asserts of every test module in every worker.
unset PYTHONDONTWRITEBYTECODE
scripts/setup.sh
scripts/ensure-servers.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Modules run side by side on worker processes, a whole module per worker, in the order of
# tests/conftest.py HEAVY_FIRST (not xdist's "most tests first"; module fixtures
# build a trained region once); MERIDIAN_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${MERIDIAN_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
