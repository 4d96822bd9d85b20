"""`serve --config runtime.yaml`: a bad file is refused at start, naming the file and the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from wasminfer_runtime.config import ConfigError
from wasminfer_runtime.server import load_config

from .support import wasminfer_command

MODEL = "models:\n  - {{name: net, format: onnx, {extra}files: [{file}]}}\n"
WORKER = "workers:\n  - {{name: w, module: w.wasm, route: /w{extra}}}\n"

BAD_YAML = [
    ("malformed YAML", "workers: [\n  - name: w\n", "not valid YAML"),
    ("unknown backend", MODEL.format(extra="backend: tensorflow, ", file="net/model.onnx"), "models.0.backend"),
    ("missing model dir", MODEL.format(extra="", file="nowhere/model.onnx"),
     "models[0].files[0] (model 'net'): {root}/nowhere/model.onnx does not exist"),
    ("missing folder", WORKER.format(extra=", folders: [{from: ./nope, to: /data}]"),
     "workers[0].folders[0].from (worker 'w'): folder {root}/nope does not exist"),
    ("unknown key", WORKER.format(extra=", limit: {memory_mib: 8}"), "workers.0.limit: Extra inputs are not permitted"),
    ("model a worker may not find", WORKER.format(extra=", wasi_nn: {enabled: true, models: [ghost]}"),
     "workers[0] (w): wasi_nn.models names unknown model(s): ghost"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML])
def test_bad_runtime_yaml_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "model.onnx").write_bytes(b"")
    cfg = tmp_path / "runtime.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(None, cfg)
    assert str(cfg) in str(err.value)
    assert message.format(root=tmp_path.resolve()) in str(err.value)


def test_runtime_yaml_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "runtime.yaml"
    cfg.write_bytes(b"workers: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, cfg)
    assert str(err.value) == f"{cfg}: not UTF-8 (byte 0xe9 at offset 17)"


def test_a_good_runtime_yaml_resolves_paths_from_its_folder(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "model.onnx").write_bytes(b"")
    (tmp_path / "data").mkdir()
    cfg = tmp_path / "runtime.yaml"
    cfg.write_text(MODEL.format(extra="", file="net/model.onnx")
                   + WORKER.format(extra=", folders: [{from: ./data, to: /data}]"))
    loaded = load_config(None, cfg)
    assert loaded.models[0].files == [tmp_path.resolve() / "net" / "model.onnx"]
    assert loaded.workers[0].folders[0].from_ == tmp_path.resolve() / "data"


def test_serve_command_refuses_a_bad_runtime_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "runtime.yaml"
    cfg.write_text(MODEL.format(extra="", file="nowhere/model.onnx"))
    proc = subprocess.run([*wasminfer_command(), "serve", "--config", str(cfg), "--port", "0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: models[0].files[0]" in proc.stderr


def test_runtime_yaml_vars_take_the_environment_like_wws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator renders Secret-backed env as `NAME: "$NAME"` so the secret never lands in a ConfigMap.
    monkeypatch.setenv("API_TOKEN", "s3cret")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    cfg = tmp_path / "runtime.yaml"
    cfg.write_text(WORKER.format(extra=", vars: {TOKEN: $API_TOKEN, GONE: $UNSET_VAR, PLAIN: 'a $b'}"))
    loaded = load_config(None, cfg)
    assert loaded.workers[0].vars == {"TOKEN": "s3cret", "GONE": "", "PLAIN": "a $b"}
