# Two entry points: `make demo` and `make test`. Each creates .venv and installs what
# it needs; re-running installs nothing new unless pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench system-deps test-servers tap
TAP := sidecar/dataplane/liblookout_tap.so

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

# the tap Envoy loads, built beside the module that finds it (tap/Makefile)
$(TAP): tap/lookout_tap.c tap/envoy_abi.h tap/unused_hooks.h tap/Makefile
	$(MAKE) -s -C tap BUILD=../sidecar/dataplane ../sidecar/dataplane/liblookout_tap.so

tap: $(TAP)

demo: $(VENV)/.installed $(TAP)
	$(BIN)/lookout demo

system-deps:
	bash tools/install_system_deps.sh

# the servers the tests start: moto (S3) in .venv-moto, Azurite in .azurite, Label Studio
# in .venv-labelstudio
test-servers:
	PYTHON=$(PYTHON) bash tools/install_test_servers.sh

# ruff, and mypy held to its committed baseline (tools/mypy_baseline.py: it only shrinks)
lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m tools.mypy_baseline

test: $(VENV)/.installed-test system-deps test-servers lint $(TAP)
	$(BIN)/python -m pytest -n auto

$(VENV)/.installed-bench: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

bench: $(VENV)/.installed-bench $(TAP)
	$(BIN)/python bench/proxy.py
	$(BIN)/python bench/grpc.py
	$(BIN)/python bench/decode.py
