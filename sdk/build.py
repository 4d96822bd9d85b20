"""Build every guest module of the project from source.

C guests (`*.c` next to where the `.wasm` should land) are compiled with Zig from PyPI for
wasm32-wasi against the SDK headers in `sdk/c`; Go guests (a folder with `go.mod`) with
`GOOS=wasip1 GOARCH=wasm go build`. Outputs are rebuilt only when a source is newer.

    python sdk/build.py            # everything
    python sdk/build.py examples   # only under examples/
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK_INCLUDE = ROOT / "sdk" / "c"
# Where C sources are compiled one file -> one module.
C_GUEST_DIRS = [ROOT / "examples", ROOT / "tests" / "guests", ROOT / "bench" / "guests"]
# Zig's default wasm stack is 16 MiB and sits below the data, so every page a guest touches lies
# past the part of linear memory the runtime keeps resident between instances (4 MiB) and is
# faulted in afresh on every request. 1 MiB (Rust's default) keeps a typical guest inside it.
C_STACK_BYTES = 1024 * 1024


def _newer(out: Path, sources: list[Path]) -> bool:
    return not out.exists() or any(s.stat().st_mtime > out.stat().st_mtime for s in sources)


def _sdk_sources() -> list[Path]:
    return sorted(SDK_INCLUDE.glob("*.[ch]"))


def build_c(src: Path) -> Path:
    out = src.with_suffix(".wasm")
    if not _newer(out, [src, *_sdk_sources(), Path(__file__)]):  # new flags rebuild too
        return out
    sdk_impl = [str(p) for p in sorted(SDK_INCLUDE.glob("*.c"))]
    cmd = [
        sys.executable, "-m", "ziglang", "cc", "--target=wasm32-wasi", "-Os", "-Wall", "-Werror",
        f"-Wl,-z,stack-size={C_STACK_BYTES}", f"-I{SDK_INCLUDE}", str(src), *sdk_impl, "-o", str(out),
    ]
    print(f"[build] cc   {out.relative_to(ROOT)}", flush=True)
    subprocess.run(cmd, check=True)
    return out


def build_go(pkg: Path) -> Path:
    out = pkg.with_suffix(".wasm") if pkg.suffix else pkg.parent / f"{pkg.name}.wasm"
    sources = list(pkg.rglob("*.go")) + [pkg / "go.mod"]
    if not _newer(out, sources):
        return out
    if shutil.which("go") is None:
        raise SystemExit("error: building Go guests needs the Go toolchain (https://go.dev/dl, or apt-get install golang)")
    env = {**os.environ, "GOOS": "wasip1", "GOARCH": "wasm", "CGO_ENABLED": "0"}
    print(f"[build] go   {out.relative_to(ROOT)}", flush=True)
    subprocess.run(["go", "build", "-trimpath", "-o", str(out), "."], cwd=pkg, env=env, check=True)
    return out


def discover(under: Path | None = None) -> tuple[list[Path], list[Path]]:
    c_sources: list[Path] = []
    go_packages: list[Path] = []
    for d in C_GUEST_DIRS:
        if not d.exists() or (under is not None and not d.resolve().is_relative_to(under.resolve())
                              and not under.resolve().is_relative_to(d.resolve())):
            continue
        for src in sorted(d.rglob("*.c")):
            if "_src" in src.parts or (under is not None and not src.resolve().is_relative_to(under.resolve())):
                continue
            c_sources.append(src)
        for mod in sorted(d.rglob("go.mod")):
            if under is None or mod.resolve().is_relative_to(under.resolve()):
                go_packages.append(mod.parent)
    return c_sources, go_packages


def main(argv: list[str]) -> int:
    under = Path(argv[0]) if argv else None
    c_sources, go_packages = discover(under)
    try:
        for src in c_sources:
            build_c(src)
        for pkg in go_packages:
            build_go(pkg)
    except subprocess.CalledProcessError as err:
        print(f"error: guest build failed: {' '.join(map(str, err.cmd))}", file=sys.stderr)
        return 1
    print(f"[build] {len(c_sources)} C and {len(go_packages)} Go guest(s) up to date", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
