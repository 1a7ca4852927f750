#!/usr/bin/env bash
# Refresh the Dagster UI screenshots in docs/ (the UI test in a real browser, writing there).
# The test suite itself never writes tracked files: it keeps its screenshots in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/ensure-servers.sh
MERIDIAN_SCREENSHOTS_DIR="$PWD/docs" exec .venv/bin/python -m pytest tests/test_ui.py -q "$@"
