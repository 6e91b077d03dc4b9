# Two commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

# torch: a bare `torch` requirement pulls a multi-GB CUDA build; without a GPU install the CPU
# build first (on the reference machines `pip install torch==2.13.0` takes the CPU wheel on disk).
# Override with `make TORCH_SPEC=... test`, e.g. a CUDA build on a GPU machine.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch,torch==2.13.0)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check '$(TORCH_SPEC)'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[torch,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dcq demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	scripts/check_wheel.sh $(PYTHON) '$(TORCH_SPEC)'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_decode
	$(BIN)/python -m benchmarks.bench_size
	$(BIN)/python -m benchmarks.bench_loader

clean:
	rm -rf $(VENV) out build *.egg-info
