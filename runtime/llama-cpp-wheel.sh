#!/usr/bin/env bash
# Compiles llama-cpp-python, the GGML backend's binding, into a wheel: PyPI has only its source. Used by
# `make llama-cpp` (.ci/llama-cpp.sh) and by the runtime images, so both run the same build of llama.cpp.
#   runtime/llama-cpp-wheel.sh PYTHON PYPROJECT OUT_DIR
# The build is portable, not tuned to the building machine (GGML_NATIVE=OFF): llama.cpp then targets
# x86-64-v3 (AVX2, FMA, F16C, BMI2), which every x86 server CPU since 2013 has. LLAMA_CPP_CMAKE_ARGS adds
# flags (GGML_CUDA=on, say). Compiling takes tens of minutes on two cores; progress every 20 steps.
set -euo pipefail
py="$1" pyproject="$2" out="$3"
pin="$(sed -n 's/^ggml = \["\(llama-cpp-python==[^"]*\)"\]$/\1/p' "$pyproject")"
[[ -n "$pin" ]] || { echo "[llama-cpp] no llama-cpp-python pin in $pyproject ([project.optional-dependencies] ggml)" >&2; exit 1; }
mkdir -p "$out"
echo "[llama-cpp $(date +%H:%M:%S)] compiling $pin (portable x86-64-v3${LLAMA_CPP_CMAKE_ARGS:+, $LLAMA_CPP_CMAKE_ARGS}) into $out" >&2
CMAKE_ARGS="-DGGML_NATIVE=OFF ${LLAMA_CPP_CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$py" -m pip wheel --no-deps --no-cache-dir -v "$pin" -w "$out" 2>&1 \
  | awk '/\[[0-9]+\/[0-9]+\]/ { n++; if (n % 20 == 0 && match($0, /\[[0-9]+\/[0-9]+\]/)) { print "[llama-cpp] compiled " substr($0, RSTART + 1, RLENGTH - 2) " steps"; fflush() } next }
         /[Ee]rror|Successfully built|Saved/ { print "[llama-cpp] " $0; fflush() }' >&2
ls "$out"/llama_cpp_python-"${pin#*==}"-*.whl >/dev/null
