# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make setup` is idempotent: it reinstalls only when pyproject.toml changed.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo lint test test-fast bench clean os-packages

setup: $(STAMP) os-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[cpu,test]'
	# OpenRLHF is a test oracle for the loss functions only; its own dependencies (flash-attn,
	# a CUDA vLLM) cannot install here, and the loss code needs none of them.
	$(BIN)/pip install -q --no-deps 'openrlhf==0.11.2'
	# Liger Kernel is the oracle and the competitor of the fused policy loss (bench/gpu_check.py);
	# its chunked losses are plain torch, so its Triton dependency is not needed on CPU.
	$(BIN)/pip install -q --no-deps 'liger-kernel==0.8.5'
	# PyPI's torchvision/torchaudio/torchcodec break transformers imports next to the +cpu torch
	# ("operator torchvision::nms does not exist"); nothing here needs them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	# DeepSpeed compiles its CPU shared-memory collective op (about a minute on 2 cores) the
	# first time a process initialises it; do it here once rather than inside the first run.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()" >/dev/null \
	  || echo "warning: DeepSpeed's CPU shm op did not build now; DeepSpeed will try again when first used"
	touch $(STAMP)

# Debian packages, each installed when we can (root or sudo) and a warning otherwise, as
# command:package pairs: bubblewrap gives the code sandbox its namespaces; prometheus and
# chromium + chromium-driver serve the monitoring and browser tests (tests/e2e: a Prometheus
# server scraping a Ray cluster, the Ray dashboard and run reports in headless chromium).
# Where systemd runs, Debian's prometheus package also starts a prometheus service on :9090;
# the tests start their own on a free port.
OS_PACKAGES := bwrap:bubblewrap prometheus:prometheus chromium:chromium chromedriver:chromium-driver

os-packages:
	@for pair in $(OS_PACKAGES); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 && continue; \
	  case $$pkg in bubblewrap) why="the code sandbox will refuse untrusted code";; \
	    *) why="the tests that need it skip (fail under CI=true)";; esac; \
	  install="apt-get install -y -q --no-install-recommends $$pkg"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    ($$install >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && $$install >/dev/null 2>&1)) \
	      || echo "warning: could not install $$pkg: $$why"; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    (sudo $$install >/dev/null 2>&1 || (sudo apt-get update -q >/dev/null 2>&1 && sudo $$install >/dev/null 2>&1)) \
	      || echo "warning: could not install $$pkg: $$why"; \
	  else echo "warning: $$pkg missing and no root: $$why"; fi; \
	done

demo: setup
	$(BIN)/python -m qwen25_rl.demo

# The formatter, the linter and the layer contracts (import-linter, pyproject.toml) hold the
# line before any test runs.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q --durations=40 $(PYTEST_ARGS)

# Everything but the slow end-to-end tests: for a quick local loop.
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
