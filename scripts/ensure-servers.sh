#!/usr/bin/env bash
# What the tests start on loopback or drive, from Debian's packages: redis-server (online
# store), PostgreSQL (the production profile's Dagster instance and MLflow backend) and
# Chromium (the UI test, through Playwright). Installs whatever is missing; the tests
# start and stop their own instances.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pg_ctl" ]; } \
   && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${missing[*]} — install Debian's packages (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "==> installing ${missing[*]} (Debian)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a cluster of its own; the tests use throwaway clusters.
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
  (command -v pg_ctlcluster >/dev/null && pg_lsclusters -h | awk '{print $1, $2}' | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop || true
  done) || true
fi
