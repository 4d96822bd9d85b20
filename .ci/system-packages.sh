#!/usr/bin/env bash
# Debian packages the tests use: Chromium for the browser test, Lua 5.1 for the Argo CD health checks;
# buildah, mmdebstrap and a static-linking gcc to build the container images (e2e/cluster/images);
# containerd, runc, the CNI plugins, iptables and conntrack for the real Kubernetes node; skopeo to
# inspect image archives.
set -euo pipefail
# package  what shows it is installed (a command on PATH, or a file)
checks=(
  "chromium chromium"
  "lua5.1 lua5.1"
  "buildah buildah"
  "mmdebstrap mmdebstrap"
  "gcc gcc"
  "libc6-dev /usr/lib/x86_64-linux-gnu/libc.a"
  "containerd containerd"
  "runc runc"
  "containernetworking-plugins /usr/lib/cni/bridge"
  "iptables iptables"
  "conntrack conntrack"
  "skopeo skopeo"
)
present() {
  if [[ "$1" == /* ]]; then [ -e "$1" ]; else command -v "$1" >/dev/null; fi
}
missing() {
  local entry
  for entry in "${checks[@]}"; do
    present "${entry#* }" || echo "${entry%% *}"
  done
}
mapfile -t need < <(missing)
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
mapfile -t still < <(missing)
if [ ${#still[@]} -ne 0 ]; then
  echo "error: still missing after apt-get install: ${still[*]}" >&2
  exit 1
fi
