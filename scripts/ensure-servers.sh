#!/usr/bin/env bash
# Servers the tests start on loopback (redis-server) come from Debian's packages.
# Installs them when missing; the tests start and stop their own instances.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "redis-server is missing: install Debian's redis-server package (apt-get install redis-server)" >&2
  exit 1
fi
echo "==> installing redis-server (Debian)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
