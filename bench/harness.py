"""What every benchmark does first: build its guests and fetch its models with the project's own
steps (sdk/build.py, examples/fetch_models.py), and report progress on stderr."""

from __future__ import annotations

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
