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
    failed = wasminfer_run([probe, "exit", "42"])
    assert (failed.returncode, failed.stderr) == (42, b"")  # nothing of ours on the guest's stderr


def test_options_before_the_module_or_after_it_up_to_double_dash(wasminfer_run: RunWasminfer, guests: Path,
                                                                 tmp_path: Path) -> None:
    probe = str(guests / "wasi_probe.wasm")
    (tmp_path / "f.txt").write_text("shared")
    folder = f"{tmp_path}::/d"
    for args in (
        ["--dir", folder, probe, "read", "/d/f.txt"],  # wasmtime's order
        [probe, "--dir", folder, "--", "read", "/d/f.txt"],  # options after the module, up to --
        [probe, f"--dir={folder}", "read", "/d/f.txt"],  # ... or up to the first word that is no option
    ):
        done = wasminfer_run(args)
        assert (done.returncode, done.stdout) == (0, b"shared"), (args, done.stderr)
    env = wasminfer_run([probe, "-S", "nn", "--env", "A=1", "--env=B=2", "--", "env", "B"])
    assert env.stdout == b"2\n", env.stderr
    # After the guest's first argument, or after --, everything is the guest's, options included.
    for args in ([probe, "args", "--dir", "x"], [probe, "--", "args", "--dir", "x"]):
        assert wasminfer_run(args).stdout == b"--dir\nx\n"


def test_guest_error_from_wasi_nn_is_the_guests_exit(wasminfer_run: RunWasminfer, guests: Path) -> None:
    done = wasminfer_run(["-S", "nn", str(guests / "nn_infer.wasm"), "name", "absent", "1,256"])
    assert (done.returncode, done.stdout) == (1, b"error load 8\n")
    # The guest saw errno 8; the user also sees the host's reason.
    assert b"wasminfer run: wasi-nn load_by_name -> not_found: no model named 'absent' for this worker" in done.stderr


def test_usage_errors_say_what_is_wrong(wasminfer_run: RunWasminfer, guests: Path, tmp_path: Path) -> None:
    probe = str(guests / "wasi_probe.wasm")
    cases = [
        (["--nn-graph", "tensorflow::/tmp", probe], 2, b"ENCODING::DIR"),
        (["--nn-graph", f"openvino::{tmp_path / 'nope'}", probe], 2, b"is not a directory"),
        (["--dir", f"{tmp_path / 'nope'}::/x", probe], 2, b"is not a directory"),
        ([probe, "--timeout", "soon", "--", "echo"], 2, b"--timeout: invalid float value: 'soon'"),
        ([probe, "--dir"], 2, b"--dir: expected one argument"),
        ([], 2, b"which module?"),
        (["-S", "threads", probe], 2, b"-S threads"),
        ([str(tmp_path / "absent.wasm")], 1, b"cannot read module"),
        (["--nn-graph", f"openvino::{tmp_path}", probe], 1, b"does not exist"),
        ([str(guests / "nn_infer.wasm"), "name", "x", "1"], 1, b"wasi-nn is not enabled"),
    ]
    for args, code, needle in cases:
        done = wasminfer_run(args)
        assert done.returncode == code, (args, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
