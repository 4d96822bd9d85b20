"""`wasminfer run` as a command: flags, guest output, exit codes and usage errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conftest import RunWasminfer, parse_output


def test_onnx_named_graph_and_guest_arguments(wasminfer_run: RunWasminfer, guests: Path, models: Path) -> None:
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    done = wasminfer_run(["--nn-graph", f"onnx::{models / 'fc256-onnx'}", str(guests / "nn_infer.wasm"),
                          "--", "name", "fc256-onnx", "1,256"], x.tobytes())
    assert done.returncode == 0, done.stderr.decode()
    assert len(parse_output(done.stdout)) == 1024


def test_guest_stderr_and_exit_code_pass_through(wasminfer_run: RunWasminfer, guests: Path) -> None:
    probe = str(guests / "wasi_probe.wasm")
    done = wasminfer_run([probe, "stderr", "to the terminal"])
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"to the terminal\n")
    assert wasminfer_run([probe, "exit", "42"]).returncode == 42


def test_guest_error_from_wasi_nn_is_the_guests_exit(wasminfer_run: RunWasminfer, guests: Path) -> None:
    done = wasminfer_run(["-S", "nn", str(guests / "nn_infer.wasm"), "name", "absent", "1,256"])
    assert (done.returncode, done.stdout) == (1, b"error load 8\n")


def test_usage_errors_say_what_is_wrong(wasminfer_run: RunWasminfer, guests: Path, tmp_path: Path) -> None:
    probe = str(guests / "wasi_probe.wasm")
    cases = [
        (["--nn-graph", "tensorflow::/tmp", probe], 2, b"ENCODING::DIR"),
        (["--nn-graph", f"openvino::{tmp_path / 'nope'}", probe], 2, b"is not a directory"),
        (["--dir", f"{tmp_path / 'nope'}::/x", probe], 2, b"is not a directory"),
        (["-S", "threads", probe], 2, b"-S threads"),
        ([str(tmp_path / "absent.wasm")], 1, b"cannot read module"),
        (["--nn-graph", f"openvino::{tmp_path}", probe], 1, b"does not exist"),
        ([str(guests / "nn_infer.wasm"), "name", "x", "1"], 1, b"wasi-nn is not enabled"),
    ]
    for args, code, needle in cases:
        done = wasminfer_run(args)
        assert done.returncode == code, (args, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
