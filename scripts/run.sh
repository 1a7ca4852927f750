#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default: every active region,
# the default window of days. Extra arguments go to `meridian run` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/meridian run "$@"
