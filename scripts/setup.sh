#!/usr/bin/env bash
# Create .venv and install Meridian from the project's own files (idempotent).
# Needs only python3.11 on PATH. Re-installs when pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}"'

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.meridian-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing dependencies (pinned by constraints.txt)"
  .venv/bin/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=69" "uv==0.13.9"
  # uv installs the same pinned set as pip (checked: identical `pip freeze`) in a fraction of
  # pip's time (66 s with a warm cache on this 2-core machine): downloads and unpacking in
  # parallel. --compile-bytecode as pip does: without .pyc files (and with
  # PYTHONDONTWRITEBYTECODE set) every process would compile dagster, dbt and MLflow again.
  # Where uv cannot reach the index as pip is configured to (a proxy's CA, a mirror), pip does it.
  .venv/bin/uv pip install --quiet --native-tls --compile-bytecode --python .venv/bin/python -c constraints.txt -e ".[dev]" \
    || .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# dbt's manifest is needed to load the Dagster definitions: parse once per change.
manifest=dbt_project/target/manifest.json
if [ ! -f "$manifest" ] || [ -n "$(find dbt_project/models dbt_project/macros dbt_project/seeds dbt_project/tests dbt_project/dbt_project.yml -newer "$manifest" -print -quit)" ]; then
  echo "==> parsing the dbt project"
  (cd dbt_project && ../.venv/bin/dbt parse --quiet --profiles-dir .)
fi
