#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: every active region,
# the default window of days. Extra arguments go to `meridian run` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode is cached for the project's own modules too (each __pycache__ is git-ignored): with
# PYTHONDONTWRITEBYTECODE set, as on these machines, every process compiled assets/, meridian/
# and the tests again, and pytest re-wrote the asserts of every test module in every worker.
unset PYTHONDONTWRITEBYTECODE
scripts/setup.sh
exec .venv/bin/meridian run "$@"
