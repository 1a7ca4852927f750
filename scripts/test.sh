#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ensure-servers.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Modules run side by side on worker processes, a whole module per worker, in the order of
# tests/conftest.py HEAVY_FIRST (not xdist's "most tests first"; module fixtures
# build a trained region once); MERIDIAN_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${MERIDIAN_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
