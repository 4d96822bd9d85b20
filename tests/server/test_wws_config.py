"""A wws folder -> RuntimeConfig: file-tree routes, per-worker TOML, and bad configs refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from wasminfer_runtime.config import BackendName, ConfigError, ModelFormat, RuntimeConfig
from wasminfer_runtime.server import with_overrides
from wasminfer_runtime.wws import load_wws_folder

from .support import ServerThread, put_worker, request, wait_ready

# Config parsing never runs a module: any bytes do for a worker here.
WASM = b"\0asm\x01\0\0\0"


def _touch(root: Path, rel: str, text: str | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        path.write_bytes(WASM)
    else:
        path.write_text(text)
    return path


def _openvino_model(root: Path, rel: str) -> None:
    _touch(root, f"{rel}/model.xml", "<net/>")
    _touch(root, f"{rel}/model.bin", "")


def test_routes_follow_the_file_tree(tmp_path: Path) -> None:
    for rel in [
        "index.wasm", "api/index.wasm", "api/hello.wasm", "api/v2/ping.wasm", "[id].wasm", "users/[user]/posts.wasm",
        "_private/secret.wasm", "api/_internal.wasm", ".hidden/x.wasm", "public/app.wasm", "lib/notes.txt",
    ]:
        _touch(tmp_path, rel)
    cfg = load_wws_folder(tmp_path)
    routes = {w.route: w.name for w in cfg.workers}
    assert routes == {
        "/": "index",
        "/api": "api/index",
        "/api/hello": "api/hello",
        "/api/v2/ping": "api/v2/ping",
        "/[id]": "[id]",
        "/users/[user]/posts": "users/[user]/posts",
    }
    assert cfg.server.public_dir == tmp_path.resolve() / "public"
    assert all(w.module.is_absolute() and w.module.is_file() for w in cfg.workers)


def test_worker_toml_is_applied(tmp_path: Path) -> None:
    _touch(tmp_path, "api/infer.wasm")
    _touch(tmp_path, "api/_data/readme.txt", "x")
    _touch(tmp_path, "api/_cache/.keep", "")
    _openvino_model(tmp_path, "api/_models/mobilenet")
    _touch(tmp_path, "_models/tiny/model.onnx", "onnx")
    _touch(tmp_path, "api/infer.toml", """
name = "infer"
version = "1"

[vars]
PLAIN = "value"
FROM_HOST = "$WWS_TEST_TOKEN"
UNSET = "$WWS_TEST_NOT_SET"
WITH_SPACE = "$ not expanded"

[[folders]]
from = "./_data"
to = "/data"

[[folders]]
from = "_cache"
to = "/cache"
writable = true

[[folders]]
from = "_data"
to = "/fixed"
readonly = true

[features.wasi_nn]
allowed_backends = ["openvino", "onnx"]

[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = { type = "local", dir = "./_models/mobilenet/" }

[[features.wasi_nn.preload_models]]
backend = "onnxruntime"
provider = { type = "local", dir = "../_models/tiny" }

[limits]
memory_mib = 64
timeout_seconds = 2.5
max_body_bytes = 1000
""")
    cfg = load_wws_folder(tmp_path, env={"WWS_TEST_TOKEN": "s3cret"})
    (w,) = cfg.workers
    root = tmp_path.resolve()
    assert (w.name, w.version, w.route) == ("infer", "1", "/api/infer")
    assert w.vars == {"PLAIN": "value", "FROM_HOST": "s3cret", "UNSET": "", "WITH_SPACE": "$ not expanded"}
    assert [(f.from_, f.to, f.writable) for f in w.folders] == [
        (root / "api/_data", "/data", True),  # read-write, as wws mounts it
        (root / "api/_cache", "/cache", True),
        (root / "api/_data", "/fixed", False),
    ]
    assert w.wasi_nn.enabled
    assert w.wasi_nn.allowed_backends == [BackendName.openvino, BackendName.onnxruntime]
    assert w.wasi_nn.models == ["mobilenet", "tiny"]
    assert (w.limits.memory_mib, w.limits.timeout_seconds, w.limits.max_body_bytes) == (64, 2.5, 1000)
    models = {m.name: m for m in cfg.models}
    assert models["mobilenet"].format is ModelFormat.openvino
    assert models["mobilenet"].files == [root / "api/_models/mobilenet/model.xml", root / "api/_models/mobilenet/model.bin"]
    assert models["tiny"].format is ModelFormat.onnx and models["tiny"].resolved_backend is BackendName.onnxruntime
    assert models["tiny"].files == [root / "_models/tiny/model.onnx"]


def test_defaults_without_toml_and_shared_models(tmp_path: Path) -> None:
    _touch(tmp_path, "plain.wasm")
    _openvino_model(tmp_path, "_models/net")
    preload = """
[features.wasi_nn]
allowed_backends = ["openvino"]
[[features.wasi_nn.preload_models]]
backend = "openvino"
provider = { type = "local", dir = "%s" }
"""
    _touch(tmp_path, "a.wasm")
    _touch(tmp_path, "a.toml", preload % "./_models/net")
    _touch(tmp_path, "sub/b.wasm")
    _touch(tmp_path, "sub/b.toml", preload % "../_models/net/")
    cfg = load_wws_folder(tmp_path)
    plain = next(w for w in cfg.workers if w.name == "plain")
    assert not plain.wasi_nn.enabled and plain.vars == {} and plain.folders == []
    assert plain.limits.memory_mib == 256
    # Two workers preloading one folder share one named model.
    assert [m.name for m in cfg.models] == ["net"]
    assert {w.name: w.wasi_nn.models for w in cfg.workers if w.wasi_nn.enabled} == {"a": ["net"], "sub/b": ["net"]}


def test_any_wasi_nn_section_enables_it(tmp_path: Path) -> None:
    _touch(tmp_path, "w.wasm")
    _touch(tmp_path, "w.toml", "[features.wasi_nn]\n")
    (w,) = load_wws_folder(tmp_path).workers
    assert w.wasi_nn.enabled and w.wasi_nn.allowed_backends == [] and w.wasi_nn.models == []


BAD_CONFIGS = [
    ("malformed TOML", "name = \"x\nversion = 1\n", "not valid TOML"),
    ("unknown allowed backend", "[features.wasi_nn]\nallowed_backends = [\"openvino\", \"tensorflow\"]\n",
     "features.wasi_nn.allowed_backends: Value error, unknown backend 'tensorflow'"),
    ("unknown preload backend",
     "[[features.wasi_nn.preload_models]]\nbackend = \"ggml\"\nprovider = { type = \"local\", dir = \"_m\" }\n",
     "features.wasi_nn.preload_models.0.backend: Value error, unknown backend 'ggml'"),
    ("missing model dir",
     "[[features.wasi_nn.preload_models]]\nbackend = \"openvino\"\nprovider = { type = \"local\", dir = \"./_models/nope\" }\n",
     "features.wasi_nn.preload_models[0].provider.dir: model folder"),
    ("model dir without model files",
     "[[features.wasi_nn.preload_models]]\nbackend = \"openvino\"\nprovider = { type = \"local\", dir = \"./_empty\" }\n",
     "features.wasi_nn.preload_models[0].provider.dir:"),
    ("unsupported provider",
     "[[features.wasi_nn.preload_models]]\nbackend = \"openvino\"\nprovider = { type = \"http\", dir = \"x\" }\n",
     "features.wasi_nn.preload_models.0.provider.type"),
    ("missing folder", "[[folders]]\nfrom = \"./_nope\"\nto = \"/data\"\n", "folders[0].from: folder"),
    ("relative guest path", "[[folders]]\nfrom = \"./_empty\"\nto = \"data\"\n", "folders[0]"),
    ("typo in a section", "[feature.wasi_nn]\nallowed_backends = []\n", "feature: Extra inputs are not permitted"),
    ("non-string var", "[vars]\nPORT = 8080\n", "vars.PORT"),
    ("bad limit", "[limits]\ntimeout_seconds = -1\n", "limits.timeout_seconds"),
]


def test_worker_toml_that_is_not_utf8_names_file_and_byte(tmp_path: Path) -> None:
    _touch(tmp_path, "w.wasm")
    toml_path = tmp_path / "w.toml"
    toml_path.write_bytes(b'[vars]\nNAME = "caf\xe9"\n')
    assert load_wws_folder(tmp_path).worker_errors == {"w": f"{toml_path.resolve()}: not UTF-8 (byte 0xe9 at offset 18)"}


@pytest.mark.parametrize(("toml", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_worker_toml_names_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    """The worker keeps its route and carries the reason (it answers 503 with it); the folder's
    other workers are unaffected."""
    _touch(tmp_path, "api/w.wasm")
    _touch(tmp_path, "ok.wasm")
    (tmp_path / "api/_empty").mkdir()
    toml_path = _touch(tmp_path, "api/w.toml", toml)
    cfg = load_wws_folder(tmp_path)
    text = cfg.worker_errors["api/w"]
    assert str(toml_path.resolve()) in text, text
    assert message in text, text
    assert {w.name: w.route for w in cfg.workers} == {"api/w": "/api/w", "ok": "/ok"}
    assert list(cfg.worker_errors) == ["api/w"]


def test_same_model_name_from_two_folders_is_refused(tmp_path: Path) -> None:
    _openvino_model(tmp_path, "_a/net")
    _openvino_model(tmp_path, "_b/net")
    for w, d in (("x", "_a/net"), ("y", "_b/net")):
        _touch(tmp_path, f"{w}.wasm")
        _touch(tmp_path, f"{w}.toml",
               f"[[features.wasi_nn.preload_models]]\nbackend = \"openvino\"\nprovider = {{ type = \"local\", dir = \"{d}\" }}\n")
    cfg = load_wws_folder(tmp_path)
    assert list(cfg.worker_errors) == ["y"]
    assert re.search(r"y\.toml: features\.wasi_nn\.preload_models\[0\]\.provider\.dir: a model named 'net'",
                     cfg.worker_errors["y"]), cfg.worker_errors


def test_duplicate_worker_names_and_colliding_routes_are_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "a.wasm")
    _touch(tmp_path, "a.toml", 'name = "same"\n')
    _touch(tmp_path, "b.wasm")
    _touch(tmp_path, "b.toml", 'name = "same"\n')
    with pytest.raises(ConfigError, match=r"b\.toml: name: worker name 'same' is already used by .*a\.wasm"):
        load_wws_folder(tmp_path)

    other = tmp_path / "routes"
    _touch(other, "items/[id].wasm")
    _touch(other, "items/[name].wasm")
    with pytest.raises(ConfigError, match=r"route '/items/\[name\]' of '.*\[name\]\.wasm' collides with '/items/\[id\]'"):
        load_wws_folder(other)

    index = tmp_path / "index"
    _touch(index, "api.wasm")
    _touch(index, "api/index.wasm")
    with pytest.raises(ConfigError, match="collides"):
        load_wws_folder(index)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        load_wws_folder(tmp_path / "missing")


def test_a_folder_cannot_be_both_readonly_and_writable(tmp_path: Path) -> None:
    (tmp_path / "_d").mkdir()
    _touch(tmp_path, "w.wasm")
    _touch(tmp_path, "w.toml", '[[folders]]\nfrom = "_d"\nto = "/d"\nreadonly = true\nwritable = true\n')
    cfg = load_wws_folder(tmp_path)
    assert re.search(r"w\.toml: invalid configuration\s+folders\.0: .*readonly = true and writable = true disagree",
                     cfg.worker_errors["w"]), cfg.worker_errors


def test_wws_folders_are_read_write_unless_readonly_and_a_refused_write_names_the_folder(
        guests: dict[str, Path], tmp_path: Path, serve: Callable[[RuntimeConfig], ServerThread]) -> None:
    site = tmp_path / "site"
    for name, extra in (("rw", ""), ("ro", "readonly = true\n")):
        (site / f"_{name}").mkdir(parents=True)
        put_worker(site, f"{name}.wasm", guests["write_file"], f'[[folders]]\nfrom = "_{name}"\nto = "/data"\n{extra}')
    # Our JSON errors (wws's 500 page would not say why), to read the message.
    server = serve(with_overrides(load_wws_folder(site), wws_compat=False))
    wait_ready(server.url)

    assert request(server.url + "/rw", method="POST", body=b"kept").body == b"written\n"
    assert (site / "_rw" / "out.txt").read_bytes() == b"kept"  # as under wws: [[folders]] are writable

    refused = request(server.url + "/ro", method="POST", body=b"lost")
    assert refused.status == 500
    assert "its read-only folders: /data" in refused.json()["message"], refused.body
    assert not (site / "_ro" / "out.txt").exists()
