#!/usr/bin/env bash
# Debian packages the tests use: Chromium for the browser test, Lua 5.1 for the Argo CD health checks.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v lua5.1 >/dev/null || need+=(lua5.1)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: need root to install ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
