# eor: two commands do all the set-up on a fresh machine.
#   make test   virtualenv, torch (CPU build unless TORCH_SPEC says otherwise), eor + dev extras,
#               then the C++ tests (ctest) and pytest.
#   make lint   ruff, mypy on eor/, clang-format check on csrc/.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Installed before anything else, so that no dependency pulls a multi-GB CUDA build on a CPU machine.
# On a GPU machine: make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
EOR_WERROR ?= OFF
JOBS ?= 2
CMAKE ?= $(VENV)/bin/cmake
CTEST ?= $(VENV)/bin/ctest
STAMP := $(VENV)/.eor-installed
CXX_SOURCES := $(shell find csrc -name '*.hpp' -o -name '*.cpp' -o -name 'CMakeLists.txt' 2>/dev/null)

.PHONY: setup test test-cpp test-py lint format bench demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml CMakeLists.txt $(CXX_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e ".[dev]" -Ccmake.define.EOR_WERROR=$(EOR_WERROR)
	touch $(STAMP)

test: test-cpp test-py

test-cpp: $(STAMP)
	mkdir -p build && $(CMAKE) -S . -B build/cpp -DCMAKE_BUILD_TYPE=Release -DEOR_BUILD_PYTHON=OFF -DEOR_BUILD_TESTS=ON -DEOR_WERROR=$(EOR_WERROR) > build/cpp-configure.log || (cat build/cpp-configure.log; exit 1)
	$(CMAKE) --build build/cpp -j $(JOBS)
	$(CTEST) --test-dir build/cpp --output-on-failure

test-py: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check eor kernels tests benchmarks
	$(PY) -m ruff format --check eor kernels tests benchmarks
	$(PY) -m mypy eor
	$(VENV)/bin/clang-format --dry-run --Werror $$(find csrc -name '*.hpp' -o -name '*.cpp')

format: $(STAMP)
	$(PY) -m ruff check --fix eor kernels tests benchmarks
	$(PY) -m ruff format eor kernels tests benchmarks
	$(VENV)/bin/clang-format -i $$(find csrc -name '*.hpp' -o -name '*.cpp')

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf build build/cpp-configure.log .pytest_cache .mypy_cache .ruff_cache
