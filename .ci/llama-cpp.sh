#!/usr/bin/env bash
# Installs llama-cpp-python (the GGML backend's binding) into the project's virtual environment. PyPI has
# only its source: llama.cpp is compiled once (tens of minutes on two cores) into a wheel kept under
# ~/.cache/wasminfer/wheels, which later installs reuse. The version is the one pyproject.toml pins.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${VENV:-.venv}/bin/python"
pin="$(sed -n 's/^ggml = \["\(llama-cpp-python==[^"]*\)"\]$/\1/p' pyproject.toml)"
[[ -n "$pin" ]] || { echo "[llama-cpp] no llama-cpp-python pin in pyproject.toml ([project.optional-dependencies] ggml)" >&2; exit 1; }
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/wasminfer/wheels"
log() { printf '[llama-cpp %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '${pin#*==}')" 2>/dev/null; then
  log "$pin installed"
  exit 0
fi
mkdir -p "$wheels"
if ! ls "$wheels"/llama_cpp_python-"${pin#*==}"-*.whl >/dev/null 2>&1; then
  log "building $pin: llama.cpp from source, the first time only (progress every 20 of ~190 steps)"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$py" -m pip wheel --no-deps -v "$pin" -w "$wheels" 2>&1 \
    | awk '/\[[0-9]+\/[0-9]+\]/ { n++; if (n % 20 == 0 && match($0, /\[[0-9]+\/[0-9]+\]/)) { print "[llama-cpp] compiled " substr($0, RSTART + 1, RLENGTH - 2) " steps"; fflush() } next }
           /[Ee]rror|Successfully built|Saved/ { print "[llama-cpp] " $0; fflush() }' >&2
fi
"$py" -m pip install --quiet --find-links "$wheels" --only-binary llama-cpp-python "$pin"  # the wheel built here; its dependencies from PyPI
"$py" -c "import llama_cpp" || { log "llama_cpp does not import after the install"; exit 1; }
log "$pin installed from $wheels"
