"""The container images, checked from their Dockerfiles (no image is built here: no container engine).

Each Dockerfile is parsed into stages and instructions. Checked: multi-stage with installs only in the
build stage; a final stage without compilers or package managers' build tools that runs as a numeric
non-root user; the distributions each image installs cover every third-party import of the code that
runs in it, at the versions pinned in pyproject.toml; entry points exist; the chart and the operator
reference these images by default."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from wasminfer_runtime import cli

from .conftest import CHART, REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The images install the project's dependencies and its GGML extra (llama-cpp-python).
PINS = {
    Requirement(r).name.lower(): Requirement(r)
    for r in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["ggml"]
}
BUILD_TOOLS = {"gcc", "g++", "cc", "clang", "make", "cmake", "build-essential", "git", "go", "golang", "cargo", "rustc", "zig", "ziglang", "python3-dev"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile; continuation lines are joined."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{path}: {keyword} before the first FROM"
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


# The one stage that may hold compilers: it compiles llama.cpp (no wheel of it is on PyPI) into wheels,
# and only those wheels go on, through a `FROM scratch` stage.
COMPILE_STAGE, WHEELS_STAGE = "llama-cpp-compile", "llama-cpp-wheels"


def build_stage(stages: list[Stage]) -> Stage:
    """The stage that assembles /opt/venv, which the final stage copies."""
    (build,) = [s for s in stages if s.name == "build"]
    return build


def pip_installs(stage: Stage) -> list[str]:
    """Distribution names given to `pip install` in the stage's RUN lines (options and `.` left out)."""
    names = []
    for run in stage.all("RUN"):
        lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", ";", "||", "|", ">", "<"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            if "pip" in " ".join(words[:1]) and "install" in words:
                tail = words[words.index("install") + 1 :]
                skip = False
                for w in tail:
                    if skip:
                        skip = False
                        continue
                    if w in ("--constraint", "-c", "-r", "--requirement", "--find-links", "-f", "--only-binary"):
                        skip = True
                        continue
                    if w.startswith("-") or w == ".":
                        continue
                    names.append(w)
    return names


@dataclass(frozen=True)
class Image:
    title: str  # org.opencontainers.image.title
    entry: str  # the console script it runs
    roots: tuple[str, ...]  # the modules its entry point starts from


# The runtime's CLI imports each command's module by name (cli.COMMANDS): those are roots too.
RUNTIME_ROOTS = ("wasminfer_runtime.cli", *(module for module, _ in cli.COMMANDS.values()))
IMAGES = {
    "runtime/Dockerfile": Image("wasminfer-runtime", "wasminfer", RUNTIME_ROOTS),
    "runtime/Dockerfile.nvidia": Image("wasminfer-runtime-nvidia", "wasminfer", RUNTIME_ROOTS),
    "operator/Dockerfile": Image("wasminfer-operator", "wasminfer-operator", ("wasminfer_operator.main",)),
}


@pytest.fixture(params=sorted(IMAGES), ids=lambda p: p)
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    path = REPO / request.param
    assert path.is_file(), f"{request.param} is missing"
    _, stages = parse(path)
    return request.param, stages


def test_multi_stage_with_a_fresh_final_stage(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    assert len(stages) >= 2, f"{name}: not multi-stage"
    build_names = {s.name for s in stages[:-1]}
    final = stages[-1]
    assert final.base not in build_names, f"{name}: the final stage builds on a build stage ({final.base})"
    assert final.base == build_stage(stages).base, f"{name}: final stage should start from the same slim base as the build"
    assert "slim" in final.base, f"{name}: final base {final.base} is not a slim image"
    copies = final.all("COPY")
    assert any(c.startswith("--from=") for c in copies), f"{name}: the final stage copies nothing from the build stage"


def test_final_stage_runs_as_numeric_non_root_user(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    users = stages[-1].all("USER")
    assert users, f"{name}: no USER in the final stage (it would run as root)"
    uid = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} is not a numeric non-root user"


def test_final_stage_installs_nothing_and_holds_no_build_tools(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    final = stages[-1]
    assert not pip_installs(final), f"{name}: pip install in the final stage"
    for run in final.all("RUN"):
        words = set(run.split())
        assert not ({"apt", "apk", "dnf", "yum"} & words), f"{name}: package manager used in the final stage: {run}"
        if "apt-get" in words:
            # Run-time libraries only: no recommended extras, no package lists left in the layer.
            assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run, f"{name}: {run}"
        assert not (BUILD_TOOLS & words), f"{name}: build tools in the final stage: {run}"
    for stage in stages:
        for run in stage.all("RUN"):
            assert stage.name == COMPILE_STAGE or not (BUILD_TOOLS & set(re.findall(r"[\w+.-]+", run)) & {"build-essential", "gcc", "g++"}), (
                f"{name}: stage {stage.name} installs compilers; every dependency but llama.cpp must come as a wheel"
            )


def test_llama_cpp_is_compiled_apart_and_only_its_wheels_go_on(dockerfile: tuple[str, list[Stage]]) -> None:
    """llama.cpp is compiled in a stage of its own by runtime/llama-cpp-wheel.sh (the script `make
    llama-cpp` runs too, so a build may give its wheel instead); what leaves that stage is its wheels."""
    name, stages = dockerfile
    if IMAGES[name].entry != "wasminfer":
        return  # the operator runs no models
    by_name = {s.name: s for s in stages}
    compile_runs = " ".join(by_name[COMPILE_STAGE].all("RUN"))
    assert "runtime/llama-cpp-wheel.sh" in " ".join(by_name[COMPILE_STAGE].all("COPY")) and "llama-cpp-wheel.sh" in compile_runs
    wheels = by_name[WHEELS_STAGE]
    assert wheels.base == "scratch" and wheels.all("COPY") == [f"--from={COMPILE_STAGE} /wheels/ /"], wheels.all("COPY")
    assert not [s for s in stages if any(f"--from={COMPILE_STAGE}" in c for c in s.all("COPY")) and s is not wheels]
    build = build_stage(stages)
    assert f"--from={WHEELS_STAGE} / /tmp/wheels/" in build.all("COPY")
    assert "--find-links /tmp/wheels --only-binary llama-cpp-python" in " ".join(build.all("RUN"))
    assert "libgomp1" in " ".join(stages[-1].all("RUN")), f"{name}: llama.cpp needs GNU OpenMP at run time"


def test_build_stage_drops_pip_from_the_shipped_environment(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    runs = " ".join(r for s in stages[:-1] for r in s.all("RUN"))
    assert "pip uninstall --yes pip setuptools" in runs, f"{name}: pip and setuptools are shipped in /opt/venv"


def test_entrypoint_is_a_project_command(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    entry = yaml.safe_load(stages[-1].all("ENTRYPOINT")[-1])
    assert entry == [IMAGES[name].entry]
    assert IMAGES[name].entry in PYPROJECT["project"]["scripts"]


def test_installs_are_pinned_by_pyproject(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    runs = " ".join(r for s in stages for r in s.all("RUN"))
    assert "--constraint /tmp/constraints.txt" in runs and "p['dependencies'] + p['optional-dependencies']['ggml']" in runs
    for dist in pip_installs(build_stage(stages)):
        req = Requirement(dist.replace("${ORT_VERSION}", "0"))
        if req.name == "onnxruntime-gpu":
            continue  # pinned to the onnxruntime pin, checked below
        assert req.name.lower() in PINS, f"{name}: installs {req.name}, which pyproject.toml does not pin"
        assert str(PINS[req.name.lower()].specifier), f"{req.name} has no version constraint in pyproject.toml"


def test_nvidia_image_uses_onnxruntime_gpu_at_the_onnxruntime_pin() -> None:
    _, stages = parse(REPO / "runtime" / "Dockerfile.nvidia")
    build = build_stage(stages)
    installs = pip_installs(build)
    assert '"onnxruntime-gpu[cuda,cudnn]==${ORT_VERSION}"' in " ".join(build.all("RUN")) or any(
        i.startswith("onnxruntime-gpu[cuda,cudnn]==") for i in installs
    )
    assert "onnxruntime" not in [Requirement(i.replace("${ORT_VERSION}", "0")).name for i in installs]
    assert "sed -n 's/^onnxruntime==//p'" in " ".join(build.all("RUN"))
    assert str(PINS["onnxruntime"].specifier).startswith("==")
    env = " ".join(stages[-1].all("ENV"))
    assert "nvidia/cu13/lib" in env and "nvidia/cudnn/lib" in env and "NVIDIA_VISIBLE_DEVICES" in env


def test_nvidia_image_compiles_llama_cpp_with_cuda_against_the_libraries_it_carries() -> None:
    """llama.cpp is compiled with CUDA by the toolkit wheels of pyproject.toml's cuda-build extra, and the
    same pins constrain the CUDA runtime and cuBLAS that the image installs for ONNX Runtime and llama.cpp."""
    _, stages = parse(REPO / "runtime" / "Dockerfile.nvidia")
    by_name = {s.name: s for s in stages}
    compile_runs = " ".join(by_name[COMPILE_STAGE].all("RUN"))
    for flag in ("-DGGML_CUDA=on", "-DGGML_CUDA_NO_VMM=ON", "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}"):
        assert flag in compile_runs, f"the CUDA compile lacks {flag}"
    assert "['optional-dependencies']['cuda-build']" in compile_runs and "--requirement /tmp/cuda-build.txt" in compile_runs
    assert "p['optional-dependencies']['cuda-build']" in " ".join(build_stage(stages).all("RUN"))
    pins = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["cuda-build"]]
    assert pins and all(str(r.specifier).startswith("==") for r in pins), pins
    assert {"nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cublas"} <= {r.name for r in pins}


def _third_party_imports(roots: tuple[str, ...]) -> dict[str, str]:
    """Top-level modules imported (transitively through project modules) from `roots`, mapped to
    the project module that imports them first."""
    seen: set[str] = set()
    todo = list(roots)
    external: dict[str, str] = {}
    stdlib = set(sys.stdlib_module_names)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        spec = importlib.util.find_spec(mod)
        assert spec is not None and spec.origin, mod
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                top = n.split(".")[0]
                if top in ("wasminfer_runtime", "wasminfer_operator"):
                    try:
                        if importlib.util.find_spec(n) is not None:
                            todo.append(n)
                    except ModuleNotFoundError:
                        pass  # `from module import name`: a name, not a module
                elif top not in stdlib and top != "__future__":
                    external.setdefault(top, mod)
    return external


def _closure(dists: list[str]) -> set[str]:
    """The distributions pip installs for `dists`: themselves and their (non-extra) requirements."""
    out: set[str] = set()
    todo = [Requirement(d.replace("${ORT_VERSION}", "0")).name for d in dists]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in out:
            continue
        out.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. onnxruntime-gpu, not installed here: its own name is enough
        for r in requires:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def test_image_installs_cover_the_code_it_runs(dockerfile: tuple[str, list[Stage]]) -> None:
    """Every third-party module imported by the code the image runs comes from an installed dist."""
    name, stages = dockerfile
    installed = _closure(pip_installs(build_stage(stages)))
    if "onnxruntime-gpu" in installed:
        installed.add("onnxruntime")  # same `onnxruntime` module
    provides = importlib.metadata.packages_distributions()
    missing = []
    imports = _third_party_imports(IMAGES[name].roots)
    for module, importer in sorted(imports.items()):
        dists = {d.lower().replace("_", "-") for d in provides.get(module, [])}
        assert dists, f"{module} (imported by {importer}) is not installed in the development environment"
        if not dists & installed:
            missing.append(f"{module} (from {sorted(dists)}, imported by {importer})")
    assert not missing, f"{name} lacks: {', '.join(missing)}"


def test_image_installs_nothing_its_code_does_not_import(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    provides = importlib.metadata.packages_distributions()
    imported = {
        d.lower().replace("_", "-") for m in _third_party_imports(IMAGES[name].roots) for d in provides.get(m, [])
    }
    for dist in pip_installs(build_stage(stages)):
        req = Requirement(dist.replace("${ORT_VERSION}", "0")).name.lower()
        req = "onnxruntime" if req == "onnxruntime-gpu" else req
        assert req in imported, f"{name} installs {req}, which the code it runs never imports"


def test_operator_image_carries_no_inference_runtimes() -> None:
    _, stages = parse(REPO / "operator" / "Dockerfile")
    installed = _closure(pip_installs(stages[0]))
    assert not {"openvino", "onnxruntime", "onnxruntime-gpu", "wasmtime"} & installed


def test_build_context_is_limited_to_what_images_copy() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore
    for path in ("!pyproject.toml", "!README.md", "!runtime/", "!operator/"):
        assert path in ignore
    for rel in IMAGES:
        for _, stages in [parse(REPO / rel)]:
            for stage in stages:
                for copy in stage.all("COPY"):
                    if copy.startswith("--from="):
                        continue
                    for src in copy.split()[:-1]:
                        parts = src.rstrip("/").split("/")
                        let_in = {f"!{src}"} | {"!" + "/".join(parts[:i]) + "/" for i in range(1, len(parts) + 1)}
                        assert let_in & set(ignore), f"{rel}: COPY {src} is excluded by .dockerignore"


def test_chart_and_operator_default_to_these_images() -> None:
    from wasminfer_operator.profiles import DEFAULT_IMAGE, NVIDIA_IMAGE

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert values["image"]["repository"] == "ghcr.io/wasminfer/operator"
    assert f"{values['runtime']['image']['repository']}:{version}" == DEFAULT_IMAGE
    assert f"{values['runtime']['nvidiaImage']['repository']}:{version}" == NVIDIA_IMAGE
    for rel, image in IMAGES.items():
        text = (REPO / rel).read_text()
        assert f'org.opencontainers.image.title="{image.title}"' in text
        repo = {"wasminfer-runtime": DEFAULT_IMAGE, "wasminfer-runtime-nvidia": NVIDIA_IMAGE, "wasminfer-operator": f"ghcr.io/wasminfer/operator:{version}"}[image.title]
        assert f"-t {repo} ." in text, f"{rel}: the build command in its header does not tag {repo}"
