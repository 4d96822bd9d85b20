"""The pure parts of e2e/cluster/images.py: .dockerignore matching as Docker does it (the image tags
hash exactly the files a build's context holds), cache locations, archive pruning and which build
output is shown live. Building images needs root and buildah; `make images` does that."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    # e2e/ is not on sys.path for tests/: the module is imported as e2e/cluster/build runs it.
    if str(REPO / "e2e") not in sys.path:
        sys.path.insert(0, str(REPO / "e2e"))
    return importlib.import_module("cluster.images")


images = _load()


def ignored(path: str, text: str) -> bool:
    return bool(images.is_ignored(path, images.dockerignore_patterns(text)))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pyproject.toml", False),
        ("runtime/wasminfer_runtime/cli.py", False),
        ("operator/wasminfer_operator/py.typed", False),
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("examples/_models/fc256/model.bin", True),
        ("runtime/wasminfer_runtime/__pycache__/cli.cpython-311.pyc", True),
        ("runtime/x.wasm", True),
        ("runtime/Dockerfile", True),
        ("runtime/Dockerfile.nvidia", True),
        ("sdk/build.py", True),
    ],
)
def test_the_repository_dockerignore(path: str, expected: bool) -> None:
    assert ignored(path, (REPO / ".dockerignore").read_text()) is expected


def test_patterns_are_cleaned_like_docker() -> None:
    text = "# comment\n\n /build/ \n!./keep\n./a/../b\n"
    assert images.dockerignore_patterns(text) == [("build", False), ("keep", True), ("b", False)]


def test_single_star_stays_within_a_folder_and_double_star_spans_them() -> None:
    assert ignored("a.txt", "*.txt")
    assert not ignored("docs/a.txt", "*.txt")
    assert ignored("docs/a.txt", "*/*.txt")
    assert ignored("docs/deep/a.txt", "**/*.txt")
    assert ignored("a.txt", "**/*.txt")
    assert ignored("x/y/z", "x/**")
    assert ignored("ab", "a?") and not ignored("a/b", "a?b")
    assert ignored("v1", "v[0-9]") and not ignored("vx", "v[0-9]")


def test_a_folder_pattern_covers_what_is_below_and_the_last_match_decides() -> None:
    text = "*\n!runtime/\nruntime/secret\n"
    assert not ignored("runtime/a/b.py", text)
    assert ignored("runtime/secret/key", text)
    assert ignored("other/file", text)
    assert not ignored("runtime/a/b.py", "runtime\n!runtime\n")


def test_context_files_skip_ignored_folders_but_find_reincluded_files(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*\n!pkg/\n!docs/keep.md\n**/__pycache__\n")
    for rel in ("pkg/a.py", "pkg/__pycache__/a.pyc", "docs/keep.md", "docs/other.md", "top.txt", ".venv/x"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert images.context_files(tmp_path) == ["docs/keep.md", "pkg/a.py"]


def test_the_repository_context_is_what_the_dockerfiles_copy() -> None:
    files = images.context_files(REPO)
    assert "pyproject.toml" in files and "README.md" in files
    assert all(f in ("pyproject.toml", "README.md") or f.startswith(("runtime/", "operator/")) for f in files)
    assert not any("__pycache__" in f or f.endswith(".wasm") or "Dockerfile" in f for f in files)


def test_cache_dir_follows_the_override_then_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASMINFER_IMAGES_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert images.cache_dir() == tmp_path / "xdg" / "wasminfer" / "images"
    monkeypatch.setenv("WASMINFER_IMAGES_CACHE", str(tmp_path / "mine"))
    assert images.cache_dir() == tmp_path / "mine"


def test_pruning_keeps_the_newest_archive_and_other_images_archives(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WASMINFER_IMAGES_CACHE", str(tmp_path))
    names = ["runtime-aaaaaaaaaaaa.oci.tar", "runtime-bbbbbbbbbbbb.oci.tar", "runtime-nvidia-cccccccccccc.oci.tar"]
    for name in names:
        (tmp_path / name).write_text("x")
    images._prune_archives("runtime", tmp_path / names[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == names[1:]


def test_index_round_trip_and_built_needs_every_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WASMINFER_IMAGES_CACHE", str(tmp_path))
    assert images.built(["pause"]) is None
    archive = tmp_path / "pause-0123456789ab.oci.tar"
    archive.write_text("x")
    image = images.Image("pause", images.PAUSE_REF, archive, 684544)
    images._record(images._Entry(image, images._pause_inputs(), "f" * 64, "2026-01-01T00:00:00Z", 1.0))
    assert images.built(["pause"]) == {"pause": image}
    assert images.built(["pause", "runtime"]) is None  # no base, no runtime: nothing half-built
    archive.unlink()
    assert images.built(["pause"]) is None


def test_unknown_names_are_refused() -> None:
    with pytest.raises(images.ImageBuildError, match="unknown image"):
        images.built(["nope"])


def test_buildah_steps_are_shown_and_the_rest_is_only_logged() -> None:
    assert images._is_milestone("[1/2] STEP 5/9: RUN pip install ...")
    assert images._is_milestone("STEP 1/3: FROM scratch")
    assert images._is_milestone("[2/2] COMMIT localhost/wasminfer/runtime:abc")
    assert not images._is_milestone("--> 3f2a1b")
    assert not images._is_milestone("  Downloading numpy-2.4.6.whl (16 MB)")


def test_chroot_isolation_when_runc_cannot_start_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    def quiet(*command: str) -> subprocess.CompletedProcess[str]:
        if command[:2] == ("buildah", "run"):
            return subprocess.CompletedProcess(command, 1, "", "can't get final child's PID from pipe: EOF")
        return subprocess.CompletedProcess(command, 0, "probe-container\n", "")

    monkeypatch.delenv("BUILDAH_ISOLATION", raising=False)
    monkeypatch.setattr(images, "_isolation", None)
    monkeypatch.setattr(images, "_quiet", quiet)
    assert images._pick_isolation() == "chroot"
    monkeypatch.setattr(images, "_isolation", None)
    monkeypatch.setenv("BUILDAH_ISOLATION", "oci")
    assert images._pick_isolation() == "oci"
