"""The project's container images, built with buildah from the repository's own Dockerfiles on a
machine without Docker or a reachable container registry, and kept as OCI archives that a containerd
node imports (`ctr images import ARCHIVE`).

No base image can be pulled, so two are made here: `python`, Debian bookworm (mmdebstrap minbase)
with Debian's Python 3.11, standing in for python:3.11-slim-bookworm; and `pause`, the pod sandbox
process compiled from pause.c. The runtime, operator and (opt-in) runtime-nvidia images are
`buildah build`s of runtime/Dockerfile, operator/Dockerfile and runtime/Dockerfile.nvidia with
PYTHON_IMAGE set to that base, so the Dockerfiles stay the ones `docker build` users run.

Every image is tagged by a hash of what it is built from, and its archive is kept in a cache folder
outside the repository (cache_dir(): ~/.cache/wasminfer/images unless WASMINFER_IMAGES_CACHE or
XDG_CACHE_HOME say otherwise), with index.json naming the newest archive of each image: an unchanged
image is never rebuilt.
Command line: e2e/cluster/images [--nvidia] [--only NAME...] [--force]. Needs root (buildah's overlay
storage, mmdebstrap's root mode). Old build-cache layers stay in buildah's storage; `buildah rmi
--prune` drops them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .state import cache_home

log = logging.getLogger("cluster.images")

REPO = Path(__file__).resolve().parents[2]
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause.c"
REGISTRY = "localhost/wasminfer"
DEFAULT_NAMES = ("pause", "runtime", "operator")
# Bumped when the build steps below change in a way the hashed inputs would not show.
RECIPE_VERSION = "1"
INSTALL_HINT = "apt-get install buildah mmdebstrap gcc libc6-dev (or, as root: bash .ci/system-packages.sh)"
# The runtime image's llama.cpp: the portable wheel `make llama-cpp` compiled (runtime/llama-cpp-wheel.sh),
# given to the build in place of the Dockerfile's own compile stage, so llama.cpp is compiled once.
LLAMA_CPP_STAGE = "llama-cpp-wheels"
LLAMA_CPP_IMAGES = ("runtime",)
# runtime-nvidia compiles llama.cpp with CUDA itself, for the GPUs this lists (the Dockerfile's
# CUDA_ARCHITECTURES; unset: its default). Each one is about an hour on two cores.
CUDA_ARCHITECTURES_VARIABLE = "WASMINFER_CUDA_ARCHITECTURES"
HEARTBEAT_S = 60.0
KEEP_LOGS = 40

# Images built from a Dockerfile in the repository, with the repository root as build context.
DOCKERFILES = {
    "runtime": "runtime/Dockerfile",
    "operator": "operator/Dockerfile",
    "runtime-nvidia": "runtime/Dockerfile.nvidia",
}
KNOWN = ("python", "pause", *DOCKERFILES)

BASE_REF = f"{REGISTRY}/python:3.11-bookworm"
PAUSE_REF = f"{REGISTRY}/pause:3.10"
PAUSE_CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")

DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
MERGED_USR_HOOK = Path("/usr/share/mmdebstrap/hooks/merged-usr")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Slim like the Docker Official Images: no docs (but the copyright files), man pages or translations,
# also for what a Dockerfile's `apt-get install` adds later, since the dpkg/apt settings stay in the
# image. The apt settings are those of the official Debian images' docker-clean: no .deb or package
# cache left behind by apt-get install (the Dockerfiles remove only /var/lib/apt/lists).
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
_APT_CLEAN = 'rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true'
BASE_APT_OPTIONS = (
    'Acquire::Languages "none"',
    'APT::AutoRemove::SuggestsImportant "false"',
    f'DPkg::Post-Invoke {{ "{_APT_CLEAN}"; }}',
    f'APT::Update::Post-Invoke {{ "{_APT_CLEAN}"; }}',
    'Dir::Cache::pkgcache ""',
    'Dir::Cache::srcpkgcache ""',
)
BASE_CLEANUP = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old'
    ' "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/etc/hostname "$1"/etc/resolv.conf'
)
BASE_CONFIG = (
    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env", "LANG=C.UTF-8",
    "--cmd", "python3",
    "--label", "org.opencontainers.image.title=wasminfer-python",
    "--label", "org.opencontainers.image.description=Debian bookworm minbase with Debian's Python 3.11, "
    "standing in for python:3.11-slim-bookworm in the e2e image builds",
)  # fmt: skip


@dataclass(frozen=True)
class Image:
    name: str  # "runtime", "operator", "runtime-nvidia", "pause", "python"
    ref: str  # "localhost/wasminfer/runtime:3f2a..."
    archive: Path  # OCI archive to import into containerd
    size_bytes: int  # uncompressed image size, as `docker images` reports it


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class _Entry:
    """One image in index.json: the Image plus what tells whether it is still current."""

    image: Image
    inputs: str  # sha256 over what the image is built from
    image_id: str  # buildah's image ID (config digest): the identity of a base image
    built_at: str
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.image.ref,
            "archive": str(self.image.archive),
            "size_bytes": self.image.size_bytes,
            "built_at": self.built_at,
            "build_seconds": round(self.build_seconds, 1),
            "inputs": self.inputs,
            "image_id": self.image_id,
        }

    @staticmethod
    def from_json(name: str, raw: dict[str, Any]) -> _Entry:
        image = Image(name, str(raw["ref"]), Path(raw["archive"]), int(raw["size_bytes"]))
        return _Entry(
            image, str(raw["inputs"]), str(raw["image_id"]), str(raw["built_at"]), float(raw["build_seconds"])
        )


# --- where things are kept -----------------------------------------------------------------------


def cache_dir() -> Path:
    """WASMINFER_IMAGES_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/wasminfer/images."""
    return cache_home("images", "WASMINFER_IMAGES_CACHE")


def index_path() -> Path:
    return cache_dir() / "index.json"


def logs_dir() -> Path:
    return cache_dir() / "logs"


def _archive_path(name: str, inputs: str) -> Path:
    return cache_dir() / f"{name}-{inputs[:12]}.oci.tar"


def _read_index() -> dict[str, _Entry]:
    try:
        raw = json.loads(index_path().read_text())
        return {name: _Entry.from_json(name, entry) for name, entry in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        # A damaged index only costs rebuilds: the archives are found again by their inputs.
        log.warning("ignoring unreadable %s: %s", index_path(), error)
        return {}


def _record(entry: _Entry) -> None:
    """Adds one image to index.json (written whole to a temporary file, then renamed into place)."""
    index = _read_index()
    index[entry.image.name] = entry
    tmp = index_path().with_suffix(".tmp")
    tmp.write_text(json.dumps({n: e.to_json() for n, e in sorted(index.items())}, indent=2) + "\n")
    tmp.replace(index_path())


def _prune_archives(name: str, keep: Path) -> None:
    """Only the newest archive of each image is kept (`runtime-<12 hex>`, never `runtime-nvidia-…`)."""
    own = re.compile(re.escape(name) + r"-[0-9a-f]{12}\.oci\.tar")
    for path in cache_dir().glob(f"{name}-*.oci.tar"):
        if own.fullmatch(path.name) and path != keep:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per cache folder: concurrent test sessions wait instead of building twice."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another build holds %s; waiting for it", cache_dir() / ".lock")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- what each image is built from -----------------------------------------------------------------


def _sha256(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no ambiguous joins
    return digest.hexdigest()


def _mmdebstrap_command(output: Path) -> list[str]:
    command = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar"]
    # Merged /usr through mmdebstrap's hook, not the usrmerge package, which pulls in Perl (~50 MB).
    if MERGED_USR_HOOK.is_dir():
        command.append(f"--hook-dir={MERGED_USR_HOOK}")
    command.append("--include=" + ",".join(BASE_PACKAGES))
    command += [f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS]
    command += [f"--aptopt={option}" for option in BASE_APT_OPTIONS]
    command.append(f"--customize-hook={BASE_CLEANUP}")
    command += ["bookworm", str(output)]
    command += [
        f"deb {DEBIAN} bookworm main",
        f"deb {DEBIAN} bookworm-updates main",
        f"deb {DEBIAN_SECURITY} bookworm-security main",
    ]
    return command


def _base_inputs() -> str:
    # Debian's security updates do not change this: the base is rebuilt when the recipe changes or
    # with --force, and everything built on it then follows through the base's image ID.
    return _sha256(RECIPE_VERSION, *_mmdebstrap_command(Path("rootfs.tar")), *BASE_CONFIG)


def _pause_inputs() -> str:
    return _sha256(RECIPE_VERSION, PAUSE_SOURCE.read_bytes(), *PAUSE_CFLAGS, PAUSE_REF)


def dockerignore_patterns(text: str) -> list[tuple[str, bool]]:
    """The (pattern, negated) lines of a .dockerignore, cleaned as Docker does."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line[1:].strip() if negated else line
        line = os.path.normpath(line).lstrip("/") if line not in ("/", ".") else ""
        if line and line != ".":
            patterns.append((line, negated))
    return patterns


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (moby patternmatcher): * and ? stop at /, ** spans folders."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out += re.escape(ch)
            else:
                out += "[" + pattern[i + 1 : end] + "]"  # a character class reads the same in Python
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def is_ignored(path: str, patterns: Sequence[tuple[str, bool]]) -> bool:
    """Whether .dockerignore keeps `path` (relative, /-separated) out of the context: the last
    pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern, negated in patterns:
        if negated != ignored:
            continue  # cannot change the outcome
        regex = _pattern_regex(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def _may_reinclude(folder: str, patterns: Sequence[tuple[str, bool]]) -> bool:
    """Whether some `!pattern` could let in a file below an ignored folder (if not, the folder is
    skipped whole: .venv and .git are never walked)."""
    for pattern, negated in patterns:
        if not negated:
            continue
        literal = re.split(r"[*?\[\\]", pattern, maxsplit=1)[0]
        if literal.startswith(folder + "/"):
            return True  # names something inside the folder
        if literal != pattern and folder.startswith(literal):
            return True  # a wildcard from within the folder's own path on: it may match below
    return False


def context_files(root: Path = REPO) -> list[str]:
    """The files of the build context: what `buildah build`/`docker build` send after .dockerignore."""
    ignore = root / ".dockerignore"
    patterns = dockerignore_patterns(ignore.read_text()) if ignore.is_file() else []
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = sorted(
            d for d in dirs if not is_ignored(prefix + d, patterns) or _may_reinclude(prefix + d, patterns)
        )
        files += [prefix + n for n in sorted(names) if not is_ignored(prefix + n, patterns)]
    return sorted(files)


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    mode = "x" if os.access(path, os.X_OK) else "-"
    return mode + hashlib.sha256(path.read_bytes()).hexdigest()


def llama_cpp_wheels() -> Path:
    """Where .ci/llama-cpp.sh keeps the portable llama-cpp-python wheel: WASMINFER_WHEELS_CACHE, else
    $XDG_CACHE_HOME (or ~/.cache)/wasminfer/wheels, then portable/."""
    return cache_home("wheels", "WASMINFER_WHEELS_CACHE") / "portable"


def _llama_cpp_wheel_files() -> list[Path]:
    pin = re.search(r'"llama-cpp-python==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None, "pyproject.toml pins no llama-cpp-python"
    wheels = sorted(llama_cpp_wheels().glob(f"llama_cpp_python-{pin.group(1)}-*.whl"))
    if not wheels:
        raise ImageBuildError(
            f"no llama-cpp-python {pin.group(1)} wheel in {llama_cpp_wheels()}: the runtime image takes the one "
            "`make llama-cpp` compiles; run it first"
        )
    return wheels


def _project_inputs(name: str, base_id: str) -> str:
    """The Dockerfile, the context it sees, the base image it starts from, the build flags, and the
    llama.cpp wheel given to the build."""
    dockerfile = REPO / DOCKERFILES[name]
    parts: list[str | bytes] = [RECIPE_VERSION, name, dockerfile.read_bytes(), base_id, BASE_REF]
    for rel in context_files(REPO):
        parts += [rel, _file_digest(REPO / rel)]
    if name in LLAMA_CPP_IMAGES:
        for wheel in _llama_cpp_wheel_files():
            parts += [wheel.name, _file_digest(wheel)]
    parts += [_build_args(name)]
    return _sha256(*parts)


def _build_args(name: str) -> str:
    """Build arguments beyond PYTHON_IMAGE, as one string (also hashed into the tag)."""
    archs = os.environ.get(CUDA_ARCHITECTURES_VARIABLE, "")
    return f"CUDA_ARCHITECTURES={archs}" if name == "runtime-nvidia" and archs else ""


# --- running the tools -----------------------------------------------------------------------------


def _need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(f"{', '.join(missing)} not found: the image build needs them; {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the images needs root (buildah's overlay storage and mmdebstrap's root mode); "
            "run as root, e.g. sudo make images"
        )


def _new_log(step: str) -> Path:
    logs_dir().mkdir(parents=True, exist_ok=True)
    old = sorted(logs_dir().glob("*.log"), key=lambda p: p.stat().st_mtime)
    for path in old[: max(0, len(old) - KEEP_LOGS + 1)]:
        path.unlink(missing_ok=True)
    return logs_dir() / f"{datetime.now():%Y%m%d-%H%M%S}-{step}.log"


_STAGE = re.compile(r"\[\d+/\d+\] ")  # buildah's prefix for a step of a multi-stage build


def _is_milestone(line: str) -> bool:
    """buildah's, pip's and mmdebstrap's lines worth showing live; the rest goes only to the log file."""
    line = _STAGE.sub("", line, count=1) if line.startswith("[") else line
    return line.startswith(("STEP ", "COMMIT ", "Successfully ", "Error", "error", "I: ", "E: ", "W: "))


def _run(step: str, command: Sequence[str], logfile: Path, show: Callable[[str], bool] = _is_milestone) -> str:
    """Runs one build command with its whole output in `logfile` and its milestones in the log;
    returns that output, raises ImageBuildError naming the step and the log file."""
    started = time.monotonic()
    with open(logfile, "a") as sink:
        sink.write(f"$ {shlex.join(command)}\n")
        sink.flush()
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        output = _follow(proc, sink, step, show)
        code = proc.wait()
        sink.write(f"# exit {code} after {time.monotonic() - started:.1f} s\n")
    if code != 0:
        tail = "\n".join("    " + line for line in output[-15:])
        raise ImageBuildError(f"{step} failed (exit {code}); full log: {logfile}\n  last lines:\n{tail}")
    return "\n".join(output)


def _follow(proc: subprocess.Popen[str], sink: IO[str], step: str, show: Callable[[str], bool]) -> list[str]:
    """Copies the output to the log file as it comes and shows the milestones; a heartbeat says where
    a long step is, since a pip install of big wheels prints nothing for minutes."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    started = beat = time.monotonic()
    at = ""
    while True:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            line = ""
        if line is None:
            return output
        if line:
            output.append(line)
            sink.write(line + "\n")
            if show(line):
                log.info("%s: %s", step, line[:200])
            if "STEP " in line or line.startswith("I: "):
                at = line  # buildah's or mmdebstrap's current step
        if time.monotonic() - beat >= HEARTBEAT_S:
            beat = time.monotonic()
            where = f" at {at[:60]}" if at else ""
            last = output[-1][:100] if output else "(no output yet)"
            log.info("%s: still running%s after %s; last output: %s", step, where, _duration(beat - started), last)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _quiet(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


# --- buildah storage -------------------------------------------------------------------------------


def _image_id(ref: str) -> str | None:
    done = _quiet("buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _size_bytes(ref: str) -> int:
    """The uncompressed size: buildah keeps the manifest of an image it committed with uncompressed
    layers, so their sizes add up to what `docker images` shows."""
    done = _quiet("buildah", "inspect", "--type", "image", "--format", "{{.Manifest}}", ref)
    if done.returncode != 0:
        raise ImageBuildError(f"buildah inspect {ref} failed: {done.stderr.strip()}")
    return sum(int(layer["size"]) for layer in json.loads(done.stdout)["layers"])


def _push(name: str, ref: str, inputs: str, logfile: Path) -> Path:
    """Writes the image as an OCI archive (written beside, then renamed: never a half archive)."""
    archive = _archive_path(name, inputs)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    _run(f"{name}: push", ["buildah", "push", "--quiet", ref, f"oci-archive:{partial}:{ref}"], logfile)
    partial.replace(archive)
    _prune_archives(name, archive)
    return archive


def _untag_older(name: str, ref: str) -> None:
    """Drops earlier tags of this image from buildah's storage; the archive is what is kept."""
    repository = ref.rpartition(":")[0]
    listed = _quiet("buildah", "images", "--format", "{{.Name}}:{{.Tag}}", "--filter", f"reference={repository}")
    for other in listed.stdout.split():
        if other != ref and other.rpartition(":")[0] == repository:
            _quiet("buildah", "rmi", other)


def _finish(name: str, ref: str, inputs: str, logfile: Path, started: float) -> _Entry:
    image_id = _image_id(ref)
    if image_id is None:
        raise ImageBuildError(f"{name}: buildah does not list {ref} after building it; see {logfile}")
    size = _size_bytes(ref)
    archive = _push(name, ref, inputs, logfile)
    _untag_older(name, ref)
    built_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = _Entry(Image(name, ref, archive, size), inputs, image_id, built_at, time.monotonic() - started)
    _record(entry)
    log.info("%s: built %s (%d MB) in %s", name, ref, size // 1_000_000, _duration(entry.build_seconds))
    return entry


def _ensure_in_storage(entry: _Entry) -> None:
    """A cached base must also be in buildah's storage for FROM: restored from its archive if gone."""
    if _image_id(entry.image.ref) == entry.image_id:
        return
    logfile = _new_log(entry.image.name + "-restore")
    log.info("%s: restoring %s from %s", entry.image.name, entry.image.ref, entry.image.archive)
    _run(f"{entry.image.name}: restore", ["buildah", "pull", "--quiet", f"oci-archive:{entry.image.archive}"], logfile)
    _run(f"{entry.image.name}: tag", ["buildah", "tag", entry.image_id, entry.image.ref], logfile)


# --- the builds ------------------------------------------------------------------------------------


def _current(name: str, inputs: str) -> _Entry | None:
    entry = _read_index().get(name)
    if entry and entry.inputs == inputs and entry.image.archive.is_file():
        return entry
    return None


def _build_base(inputs: str) -> _Entry:
    _need("buildah", "mmdebstrap")
    started, logfile = time.monotonic(), _new_log("python")
    rootfs = cache_dir() / "tmp" / "python-rootfs.tar"
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    rootfs.unlink(missing_ok=True)
    log.info("python: mmdebstrap bookworm minbase + %s (a few minutes; log: %s)", " ".join(BASE_PACKAGES), logfile)
    try:
        _run("python: mmdebstrap", _mmdebstrap_command(rootfs), logfile)
        container = _run("python: from scratch", ["buildah", "from", "scratch"], logfile).splitlines()[-1]
        try:
            _run("python: add rootfs", ["buildah", "add", "--quiet", container, str(rootfs), "/"], logfile)
            _run("python: config", ["buildah", "config", *BASE_CONFIG, container], logfile)
            _run("python: commit", ["buildah", "commit", "--quiet", container, BASE_REF], logfile)
        finally:
            _quiet("buildah", "rm", container)
    finally:
        rootfs.unlink(missing_ok=True)
    return _finish("python", BASE_REF, inputs, logfile, started)


def _build_pause(inputs: str) -> _Entry:
    _need("buildah", "gcc")
    started, logfile = time.monotonic(), _new_log("pause")
    binary = cache_dir() / "tmp" / "pause"
    binary.parent.mkdir(parents=True, exist_ok=True)
    _run("pause: gcc", ["gcc", *PAUSE_CFLAGS, "-o", str(binary), str(PAUSE_SOURCE)], logfile)
    container = _run("pause: from scratch", ["buildah", "from", "scratch"], logfile).splitlines()[-1]
    try:
        _run("pause: add", ["buildah", "add", "--quiet", "--chmod", "0755", container, str(binary), "/pause"], logfile)
        config = ["--entrypoint", '["/pause"]', "--user", "65535:65535"]
        config += ["--label", "org.opencontainers.image.title=wasminfer-pause"]
        _run("pause: config", ["buildah", "config", *config, container], logfile)
        _run("pause: commit", ["buildah", "commit", "--quiet", container, PAUSE_REF], logfile)
    finally:
        _quiet("buildah", "rm", container)
        binary.unlink(missing_ok=True)
    return _finish("pause", PAUSE_REF, inputs, logfile, started)


_isolation: str | None = None


def _pick_isolation() -> str:
    """runc (buildah's default) where it can start a container; else chroot, which needs no new
    namespaces or rlimits (runc can fail with "can't get final child's PID from pipe: EOF" inside
    restricted or nested containers). BUILDAH_ISOLATION, buildah's own setting, wins."""
    global _isolation
    if _isolation is None:
        _isolation = os.environ.get("BUILDAH_ISOLATION", "")
    if _isolation:
        return _isolation
    container = _quiet("buildah", "from", "--pull=never", BASE_REF).stdout.strip().splitlines()[-1:]
    try:
        probe = _quiet("buildah", "run", "--isolation", "oci", "--network", "none", *container, "true") if container else None
    finally:
        if container:
            _quiet("buildah", "rm", *container)
    if probe is not None and probe.returncode == 0:
        _isolation = "oci"
    else:
        reason = probe.stderr.strip().splitlines()[-1:] if probe else ["no container from the base"]
        log.info("runc cannot run build steps here (%s); using --isolation chroot", " ".join(reason))
        _isolation = "chroot"
    return _isolation


def _host_ca_bundle() -> Path | None:
    candidates = [os.environ.get("SSL_CERT_FILE", ""), "/etc/ssl/certs/ca-certificates.crt"]
    candidates += ["/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _build_project(name: str, inputs: str, base: _Entry, fresh: bool) -> _Entry:
    started, logfile = time.monotonic(), _new_log(name)
    ref = f"{REGISTRY}/{name}:{inputs[:12]}"
    command = ["buildah", "build", "--file", DOCKERFILES[name], "--tag", ref]
    command += ["--build-arg", f"PYTHON_IMAGE={base.image.ref}", "--pull=never"]
    build_args = _build_args(name)
    if build_args:
        command += ["--build-arg", build_args]
    wheels = logfile.with_suffix(".wheels")
    if name in LLAMA_CPP_IMAGES:
        # Only the pinned wheel, in a folder of its own: an older wheel in the cache stays out.
        wheels.mkdir()
        for wheel in _llama_cpp_wheel_files():
            shutil.copy(wheel, wheels)
        command += ["--build-context", f"{LLAMA_CPP_STAGE}={wheels}"]
    # pip and apt-get in RUN steps reach their registries through the host's network.
    command += ["--network", "host", "--isolation", _pick_isolation()]
    bundle = _host_ca_bundle()
    if bundle is not None:
        # RUN steps trust the CAs this machine trusts (a TLS-inspecting proxy's, say): Debian's pip and
        # apt read this bundle. A bind mount only: the image keeps Debian's own bundle.
        command += ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    # Intermediate layers are kept, so a change to the project's code does not repeat the pip installs;
    # a forced build starts afresh (new Debian updates, say).
    command += ["--layers", *(["--no-cache"] if fresh else [])]
    command += ["--force-rm", str(REPO)]  # no working container left behind by a failed step
    log.info("%s: buildah build %s (log: %s)", name, DOCKERFILES[name], logfile)
    try:
        _run(f"{name}: buildah build", command, logfile)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    return _finish(name, ref, inputs, logfile, started)


def _inputs(name: str, base: _Entry | None) -> str:
    """The hash an image's index entry carries when it is current (a project image's: on `base`)."""
    if name == "python":
        return _base_inputs()
    if name == "pause":
        return _pause_inputs()
    assert base is not None, f"{name} is built on the python base"
    return _project_inputs(name, base.image_id)


def _ensure(name: str, force: bool, base: _Entry | None) -> tuple[_Entry, bool]:
    """The image's index entry, building it unless a current one exists; True when built now."""
    inputs = _inputs(name, base)
    current = None if force else _current(name, inputs)
    if current is not None:
        return current, False
    if name == "python":
        return _build_base(inputs), True
    if name == "pause":
        return _build_pause(inputs), True
    assert base is not None
    _need("buildah")
    _ensure_in_storage(base)
    return _build_project(name, inputs, base, fresh=force), True


def _check_names(names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in KNOWN]
    if unknown:
        raise ImageBuildError(f"unknown image {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    return wanted


@dataclass(frozen=True)
class BuildResult:
    entry: _Entry
    built_now: bool


def build_all(names: Sequence[str] = DEFAULT_NAMES, force: bool = False) -> dict[str, BuildResult]:
    """build(), also saying which images were built now and how long each took (for the CLI)."""
    wanted = _check_names(names)
    results: dict[str, BuildResult] = {}
    with _locked():
        base = None
        if "python" in wanted or any(name in DOCKERFILES for name in wanted):
            entry, now = _ensure("python", force and "python" in wanted, None)
            base, results["python"] = entry, BuildResult(entry, now)
        for name in wanted:
            if name != "python":
                entry, now = _ensure(name, force, base)
                results[name] = BuildResult(entry, now)
    return {name: results[name] for name in wanted}


def build(names: Sequence[str] = DEFAULT_NAMES) -> dict[str, Image]:
    """Builds whichever of the images is missing or outdated (progress goes to this module's logger)
    and returns them all by name."""
    return {name: result.entry.image for name, result in build_all(names).items()}


def built(names: Sequence[str] = DEFAULT_NAMES) -> dict[str, Image] | None:
    """The images as index.json has them, without building anything; None if one is missing or was
    built from other inputs than the repository's current ones."""
    wanted = _check_names(names)
    index = _read_index()
    base = index.get("python")
    found: dict[str, Image] = {}
    for name in wanted:
        if name in DOCKERFILES and (base is None or base.inputs != _base_inputs()):
            return None  # built on a base that is gone or outdated
        entry = index.get(name)
        if entry is None or entry.inputs != _inputs(name, base) or not entry.image.archive.is_file():
            return None
        found[name] = entry.image
    return found


# --- command line ----------------------------------------------------------------------------------


def _table(results: dict[str, BuildResult]) -> str:
    rows = [("IMAGE", "REF", "SIZE", "BUILD TIME", "STATE")]
    for name, result in results.items():
        image = result.entry.image
        state = "built" if result.built_now else "cached"
        when = _duration(result.entry.build_seconds) + ("" if result.built_now else f" ({result.entry.built_at})")
        rows.append((name, image.ref, f"{image.size_bytes / 1_000_000:.0f} MB", when, state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e/cluster/images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nvidia", action="store_true", help="also build runtime-nvidia (gigabytes of CUDA wheels)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=KNOWN, help=f"build only these: {', '.join(KNOWN)}")
    parser.add_argument("--force", action="store_true", help="rebuild the named images from scratch, even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="[images %(asctime)s] %(message)s", datefmt="%H:%M:%S"
    )
    names = list(args.only or DEFAULT_NAMES) + (["runtime-nvidia"] if args.nvidia else [])
    started = time.monotonic()
    try:
        results = build_all(names, force=args.force)
    except ImageBuildError as error:
        log.error("FAILED: %s", error)
        return 1
    print(_table(results))
    print(f"archives and index: {cache_dir()} ({_duration(time.monotonic() - started)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
