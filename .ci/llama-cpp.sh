#!/usr/bin/env bash
# Installs llama-cpp-python (the GGML backend's binding) into the project's virtual environment. PyPI has
# only its source: runtime/llama-cpp-wheel.sh compiles llama.cpp once (tens of minutes on two cores) into a
# portable wheel kept under ~/.cache/wasminfer/wheels/portable, which later installs and the runtime
# image build (e2e/cluster/images) reuse. The version is the one pyproject.toml pins.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${VENV:-.venv}/bin/python"
pin="$(sed -n 's/^ggml = \["\(llama-cpp-python==[^"]*\)"\]$/\1/p' pyproject.toml)"
[[ -n "$pin" ]] || { echo "[llama-cpp] no llama-cpp-python pin in pyproject.toml ([project.optional-dependencies] ggml)" >&2; exit 1; }
wheels="${WASMINFER_WHEELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasminfer/wheels}/portable"
marker="${VENV:-.venv}/.llama-cpp-portable-${pin#*==}"  # says the installed build is the portable one
log() { printf '[llama-cpp %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -f "$marker" ]] && "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '${pin#*==}')" 2>/dev/null; then
  log "$pin installed"
  exit 0
fi
if ! ls "$wheels"/llama_cpp_python-"${pin#*==}"-*.whl >/dev/null 2>&1; then
  log "building $pin: llama.cpp from source, the first time only"
  bash runtime/llama-cpp-wheel.sh "$py" pyproject.toml "$wheels"
fi
# The wheel built here; its dependencies from PyPI.
"$py" -m pip install --quiet --force-reinstall --no-deps --find-links "$wheels" --only-binary llama-cpp-python "$pin"
"$py" -m pip install --quiet --find-links "$wheels" --only-binary llama-cpp-python "$pin"
"$py" -c "import llama_cpp" || { log "llama_cpp does not import after the install"; exit 1; }
touch "$marker"
log "$pin installed from $wheels"
