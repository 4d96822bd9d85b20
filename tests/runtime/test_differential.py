"""Same guest, model and input under `wasminfer run` and the reference `wasmtime run -S nn`:
the same bytes on stdout and the same exit code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from .conftest import Reference, RunWasminfer

FC_INPUT = (np.arange(256, dtype=np.float32) / 256.0 - 0.5).tobytes()
IMAGE_INPUT = np.random.default_rng(7).random((1, 3, 224, 224), dtype=np.float32).tobytes()


@pytest.fixture(scope="module")
def mobilenet(models: Path) -> Path:
    from .conftest import _setup

    _setup("examples/fetch_models.py", "mobilenet")
    return models / "mobilenet"


def both(reference: Reference, wasminfer_run: RunWasminfer, ours: Sequence[str], theirs: Sequence[str],
         stdin: bytes = b"") -> bytes:
    expected = reference.run(theirs, stdin)
    got = wasminfer_run(ours, stdin)
    assert expected.returncode == 0, expected.stderr.decode(errors="replace")[-2000:]
    assert got.returncode == expected.returncode, got.stderr.decode(errors="replace")[-2000:]
    assert got.stdout == expected.stdout
    return got.stdout


def test_load_from_files_fc256(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                               models: Path) -> None:
    args = ["-S", "nn", "--dir", f"{models / 'fc256'}::/m", str(guests / "nn_infer.wasm"), "ir", "/m", "1,256"]
    out = both(wasmtime_reference, wasminfer_run, args, args, FC_INPUT)
    assert out.startswith(b"output 1024 ")


def test_named_model_fc256(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                           models: Path) -> None:
    guest = [str(guests / "nn_infer.wasm"), "name", "fc256", "1,256", "1", "50"]
    theirs = ["-S", "nn", "-S", f"nn-graph=openvino::{models / 'fc256'}", *guest]
    both(wasmtime_reference, wasminfer_run, theirs, theirs, FC_INPUT)  # wasmtime's own spelling
    ours = ["--nn-graph", f"openvino::{models / 'fc256'}", *guest]
    both(wasmtime_reference, wasminfer_run, ours, theirs, FC_INPUT)


def test_named_and_loaded_mobilenet(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                                    mobilenet: Path) -> None:
    guest = str(guests / "nn_infer.wasm")
    named = ["-S", "nn", "-S", f"nn-graph=openvino::{mobilenet}", guest, "name", "mobilenet", "1,3,224,224"]
    out = both(wasmtime_reference, wasminfer_run, named, named, IMAGE_INPUT)
    assert out.startswith(b"output 4000 ")
    loaded = ["-S", "nn", "--dir", f"{mobilenet}::/m", guest, "ir", "/m", "1,3,224,224"]
    assert both(wasmtime_reference, wasminfer_run, loaded, loaded, IMAGE_INPUT) == out


def test_plain_wasi_behaves_alike(wasmtime_reference: Reference, wasminfer_run: RunWasminfer, guests: Path,
                                  tmp_path: Path) -> None:
    probe = str(guests / "wasi_probe.wasm")
    (tmp_path / "f.txt").write_text("file contents")
    cases = [
        [probe, "args", "one", "two words", "--flag"],
        ["--env", "A=1", "--env", "B=two", probe, "env", "B"],
        ["--dir", f"{tmp_path}::/d", probe, "read", "/d/f.txt"],
        [probe, "echo"],
    ]
    for args in cases:
        both(wasmtime_reference, wasminfer_run, args, args, b"stdin bytes")
    for args, code in (([probe, "exit", "3"], 3), ([probe, "nonsense"], 2)):
        theirs = wasmtime_reference.run(args)
        ours = wasminfer_run(args)
        assert theirs.returncode == ours.returncode == code


def test_trap_exit_status_matches(wasmtime_reference: Reference, wasminfer_run: RunWasminfer,
                                  tmp_path: Path) -> None:
    import wasmtime

    module = tmp_path / "trap.wasm"
    module.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start") unreachable))'))
    theirs = wasmtime_reference.run([str(module)])
    ours = wasminfer_run([str(module)])
    assert theirs.returncode == ours.returncode == 134
    assert b"unreachable" in ours.stderr
