#!/usr/bin/env bash
# Debian packages the tests use: Chromium for the browser test, Lua 5.1 for the Argo CD health checks.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v lua5.1 >/dev/null || need+=(lua5.1)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "error: installing ${need[*]} needs root: run 'sudo apt-get install ${need[*]}' and try again" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# A half-configured dpkg state from an interrupted install is repaired, then the install retried once.
if ! apt-get install -y -qq "${need[@]}" >/dev/null; then
  echo "apt-get install failed; repairing with 'apt-get -f install' and retrying"
  apt-get -f install -y -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
for cmd in chromium lua5.1; do
  command -v "$cmd" >/dev/null || { echo "error: $cmd is still missing after apt-get install" >&2; exit 1; }
done
