#!/usr/bin/env bash
# Build the reference wws 1.7.0 binary (Wasm Workers Server) from local sources, offline from
# GitHub: cargo only needs crates.io. Used by bench/wws_compare.py and
# tests/wws_reference/record.py.
#
#   bench/wws/build.sh WWS_SRC WAX_SRC WIT_BINDGEN_BACKPORT_SRC
#
# (or the same three as env WWS_SRC, WAX_SRC, WIT_BINDGEN_SRC), where
#   WWS_SRC                   a wws v1.7.0 tree:  git clone -b v1.7.0 https://github.com/vmware-labs/wasm-workers-server
#   WAX_SRC                   wax at rev 6d66a10: git clone https://github.com/olson-sean-k/wax && git -C wax checkout 6d66a10
#   WIT_BINDGEN_BACKPORT_SRC  wit-bindgen-backport at rev 598cd229bb43baceff9616d16930b8a5a3e79d79:
#                             git clone https://github.com/fermyon/wit-bindgen-backport && git -C wit-bindgen-backport checkout 598cd229
# The three folders are only read. Environment:
#   WWS_CACHE         where the build and the binary go (default ~/.cache/wasminfer/wws);
#                     the binary lands at $WWS_CACHE/1.7.0/bin/wws
#   CARGO_BUILD_JOBS  parallel rustc jobs (default 2); a first build takes 20-40 min on 2 cores
#   WWS_JS_ENGINE     a wasm-workers-quick-js-engine.wasm to use when WWS_SRC lacks its own
#                     (kits/javascript/, embedded with include_bytes!; only JavaScript workers use it)
#   WWS_FORCE=1       rebuild even when the binary exists
#   WWS_WASI_NN=1     build $WWS_CACHE/1.7.0/bin/wws-nn instead: the same wws with our own OpenVINO
#                     backend for wasi-nn (see below); the plain binary is left as it is
#   OPENVINO_LIB_DIR  (WWS_WASI_NN=1) the folder holding libopenvino_c.so[.N]; default: the libs
#                     folder of the `openvino` Python package of $PYTHON (default python3)
#
# What it changes in its copy of the wws tree, and why:
#   - [patch] entries point cargo at the copies of wax and wit-bindgen-backport (the git
#     dependencies of crates/router and crates/worker);
#   - kits/rust and kits/rust/worker leave the workspace: the guest-side Rust SDK, not part of
#     the server, and its git dependency (bytecodealliance/wit-bindgen) would need GitHub;
#   - `cargo update -p time --precise 0.3.36`: time 0.3.29 no longer compiles on rustc >= 1.80;
#   - `npm` is a no-op during the build: crates/panel's build.rs runs `npm install` when npm
#     exists; the admin panel (off unless --enable-panel) is not rebuilt.
# Known limit: its wasi-nn (`openvino` crate 0.5) calls ie_core_create, gone from OpenVINO >= 2024,
# so a worker's first wasi-nn call fails against a current OpenVINO. HTTP workers are unaffected.
# WWS_WASI_NN=1 lifts it: a copy of the wasmtime-wasi-nn 13.0.0 crate (from crates.io, checked
# against wws's Cargo.lock) gets bench/wws/wasi_nn_openvino.rs as its src/backend/openvino.rs and
# the `openvino` crate 0.11.1 (OpenVINO 2.0 C API, loaded at run time) in place of 0.5; a
# [patch.crates-io] entry makes wws use that copy. Same wasi-nn semantics (inputs read as NHWC);
# see the comment at the top of that file. bin/wws-nn is a small script that points the loader
# at OpenVINO and runs bin/wws-nn.bin.
set -euo pipefail

VERSION=1.7.0
WAX_REV=6d66a10
BACKPORT_REV=598cd229bb43baceff9616d16930b8a5a3e79d79
CACHE=${WWS_CACHE:-$HOME/.cache/wasminfer/wws}
BIN=$CACHE/$VERSION/bin/wws
WASI_NN=${WWS_WASI_NN:-0}
NN_CRATE=wasmtime-wasi-nn-13.0.0
OPENVINO_CRATE=0.11.1
HERE=$(cd "$(dirname "$0")" && pwd)
[[ "$WASI_NN" == 1 ]] && BIN=$CACHE/$VERSION/bin/wws-nn

say() { echo "[wws-build] $*" >&2; }
die() { say "error: $*"; exit 1; }

if [[ -x "$BIN" && "${WWS_FORCE:-0}" != 1 ]] && "$BIN" --version 2>/dev/null | grep -q " $VERSION\$"; then
  say "up to date: $BIN ($("$BIN" --version))"
  exit 0
fi

WWS_SRC=${1:-${WWS_SRC:-}}
WAX_SRC=${2:-${WAX_SRC:-}}
WIT_BINDGEN_SRC=${3:-${WIT_BINDGEN_SRC:-}}
[[ -n "$WWS_SRC" && -n "$WAX_SRC" && -n "$WIT_BINDGEN_SRC" ]] ||
  die "usage: $0 WWS_SRC WAX_SRC WIT_BINDGEN_BACKPORT_SRC (see the comment at the top of this script)"
grep -q "^version = \"$VERSION\"" "$WWS_SRC/Cargo.toml" 2>/dev/null || die "$WWS_SRC is not a wws $VERSION tree"
grep -q '^name = "wax"' "$WAX_SRC/Cargo.toml" 2>/dev/null || die "$WAX_SRC is not a wax tree"
[[ -f "$WIT_BINDGEN_SRC/crates/wasmtime/Cargo.toml" ]] || die "$WIT_BINDGEN_SRC is not a wit-bindgen-backport tree"
check_rev() {  # a git checkout must be at the pinned revision; a plain folder is taken as is
  local dir=$1 want=$2 have
  if have=$(git -C "$dir" rev-parse HEAD 2>/dev/null); then
    [[ "$have" == "$want"* ]] || die "$dir is at $have, wws $VERSION pins $want"
  fi
}
check_rev "$WAX_SRC" "$WAX_REV"
check_rev "$WIT_BINDGEN_SRC" "$BACKPORT_REV"
command -v cargo >/dev/null || die "cargo not found (https://rustup.rs)"

# Copies beside each other; the patch paths below are relative to the wws copy. cp -a keeps
# mtimes, so a rebuild over an earlier one only recompiles what changed.
SRC=$CACHE/src-$VERSION
mkdir -p "$SRC" "$CACHE/wax" "$CACHE/wit-bindgen-backport" "$CACHE/nonpm"
say "copying sources into $CACHE"
copy() { (cd "$1" && tar --exclude=./.git --exclude=./target -cf - .) | tar -xf - -C "$2"; }
copy "$WWS_SRC" "$SRC"
copy "$WAX_SRC" "$CACHE/wax"
copy "$WIT_BINDGEN_SRC" "$CACHE/wit-bindgen-backport"

ENGINE=$SRC/kits/javascript/wasm-workers-quick-js-engine.wasm
if [[ ! -s "$ENGINE" ]]; then
  [[ -n "${WWS_JS_ENGINE:-}" && -s "${WWS_JS_ENGINE:-}" ]] ||
    die "$WWS_SRC has no kits/javascript/wasm-workers-quick-js-engine.wasm; give one in WWS_JS_ENGINE"
  say "using $WWS_JS_ENGINE as the embedded JavaScript engine"
  cp "$WWS_JS_ENGINE" "$ENGINE"
fi

say "pointing cargo at the local git dependencies"
cd "$SRC"
sed -i -e '/^  "kits\/rust",$/d' -e '/^  "kits\/rust\/worker",$/d' Cargo.toml
cat >>Cargo.toml <<'EOF'

# Local build (bench/wws/build.sh): the git dependencies come from folders beside this one.
[patch."https://github.com/olson-sean-k/wax.git"]
wax = { path = "../wax" }

[patch."https://github.com/fermyon/wit-bindgen-backport"]
wit-bindgen-wasmtime = { path = "../wit-bindgen-backport/crates/wasmtime" }
EOF
say "cargo update -p time --precise 0.3.36 (time 0.3.29 fails on current rustc)"
cargo update -p time --precise 0.3.36

if [[ "$WASI_NN" == 1 ]]; then
  # Where the OpenVINO C library is; the `openvino` crate looks for the exact name
  # libopenvino_c.so, which a pip wheel only has with a version suffix: a link gives it.
  OV_LIB=${OPENVINO_LIB_DIR:-$("${PYTHON:-python3}" -c 'import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), "libs"))')}
  OV_C=$(ls "$OV_LIB"/libopenvino_c.so* 2>/dev/null | sort | tail -n 1)
  [[ -n "$OV_C" ]] || die "no libopenvino_c.so* in $OV_LIB (set OPENVINO_LIB_DIR)"
  NN=$CACHE/$NN_CRATE
  sum=$(grep -A3 '^name = "wasmtime-wasi-nn"$' Cargo.lock | sed -n 's/^checksum = "\(.*\)"$/\1/p')
  say "vendoring $NN_CRATE (sha256 $sum) with bench/wws/wasi_nn_openvino.rs"
  rm -rf "$NN" && mkdir -p "$NN"
  curl -fsSL "https://static.crates.io/crates/wasmtime-wasi-nn/$NN_CRATE.crate" -o "$NN.crate"
  echo "$sum  $NN.crate" | sha256sum -c --quiet - || die "$NN_CRATE.crate does not match wws's Cargo.lock"
  tar -xzf "$NN.crate" -C "$CACHE"
  cp "$HERE/wasi_nn_openvino.rs" "$NN/src/backend/openvino.rs"
  sed -i '/^\[dependencies.openvino\]$/{n;s/^version = .*/version = "='"$OPENVINO_CRATE"'"/}' "$NN/Cargo.toml"
  grep -A1 '^\[dependencies.openvino\]$' "$NN/Cargo.toml" | grep -q "=$OPENVINO_CRATE" ||
    die "could not point $NN/Cargo.toml at openvino $OPENVINO_CRATE"
  cat >>Cargo.toml <<EOF

# Local build (bench/wws/build.sh, WWS_WASI_NN=1): wasi-nn on the OpenVINO 2.0 C API.
[patch.crates-io]
wasmtime-wasi-nn = { path = "../$NN_CRATE" }
EOF
  # Resolves the patch into Cargo.lock; anstream moves from 0.6.4 to the newest 0.6 (and its own
  # small dependencies with it), as openvino-sys's build dependency env_logger 0.11 needs >= 0.6.11.
  cargo update -p anstream
fi

printf '#!/bin/sh\nexit 0\n' >"$CACHE/nonpm/npm"
chmod +x "$CACHE/nonpm/npm"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
say "cargo build --release --locked --bin wws (jobs: $CARGO_BUILD_JOBS; 20-40 min on 2 cores the first time)"
PATH="$CACHE/nonpm:$PATH" cargo build --release --locked --bin wws

if [[ "$WASI_NN" == 1 ]]; then
  install -D -m 0755 target/release/wws "$BIN.bin"
  mkdir -p "$CACHE/$VERSION/openvino"
  ln -sfn "$OV_C" "$CACHE/$VERSION/openvino/libopenvino_c.so"
  cat >"$BIN" <<EOF
#!/bin/sh
# wws $VERSION with wasi-nn on the OpenVINO in $OV_LIB (bench/wws/build.sh, WWS_WASI_NN=1)
LD_LIBRARY_PATH="$CACHE/$VERSION/openvino:$OV_LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$BIN.bin" "\$@"
EOF
  chmod 0755 "$BIN"
else
  install -D -m 0755 target/release/wws "$BIN"
fi
say "built $BIN: $("$BIN" --version)"
