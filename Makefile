# Two entry points (see README): `make serve` runs the standalone runtime on the examples,
# `make test` installs everything and runs every test, the e2e ones against a real control plane.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup system-packages python llama-cpp kserve-client guests models cluster-binaries images serve test typecheck bench clean

setup: python guests models

system-packages:
	@bash .ci/system-packages.sh

python: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# The GGML backend's llama.cpp binding, compiled from source once and kept as a wheel in ~/.cache/wasminfer.
llama-cpp: python
	bash .ci/llama-cpp.sh

# KServe's Python client for the model-server tests, in a virtual environment of its own: its pins
# (kubernetes among them) clash with the project's.
KSERVE_VENV ?= .venv-kserve
kserve-client: $(KSERVE_VENV)/.installed

$(KSERVE_VENV)/.installed: tests/modelserver/kserve-requirements.txt
	python3 -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(KSERVE_VENV)/bin/pip install --quiet -r tests/modelserver/kserve-requirements.txt
	touch $@

guests: python
	$(PY) sdk/build.py

models: python
	$(PY) examples/fetch_models.py

cluster-binaries: python
	bash e2e/cluster/build

# Container images from the Dockerfiles, built with buildah into OCI archives for the test node
# (cached by content; NVIDIA=1 adds runtime-nvidia). Needs root, buildah and mmdebstrap. The runtime
# image takes its llama.cpp from `make llama-cpp`, so llama.cpp is compiled once.
images: llama-cpp
	bash e2e/cluster/images $(if $(NVIDIA),--nvidia)

serve: setup
	$(VENV)/bin/wasminfer serve examples/ --host 127.0.0.1 --port 8080

typecheck: python
	$(VENV)/bin/mypy

test: system-packages setup llama-cpp kserve-client cluster-binaries images typecheck
	$(VENV)/bin/pytest -ra

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf .artifacts examples/**/*.wasm tests/guests/*.wasm
