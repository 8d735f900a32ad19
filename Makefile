# The two commands of the quick start:
#   make run    set up, then start the service on the embedded defaults
#   make test   set up, then run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck deploy-check system-packages pytest bench lock clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "scoreboard needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed (on Debian: apt install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

run: $(VENV)/.installed
	$(BIN)/scoreboard serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed lint typecheck deploy-check system-packages pytest

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here);
# the season tests run servers under Debian's libfaketime.
system-packages:
	@{ command -v chromium && command -v faketime; } >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium faketime; \
		else \
			echo "the tests need Chromium at /usr/bin/chromium and libfaketime (apt install chromium faketime)"; exit 1; \
		fi; }

lint: $(VENV)/.installed
	$(BIN)/ruff check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# The container files (Dockerfile, compose.yaml, deploy/nginx.conf), linted statically.
deploy-check: $(VENV)/.installed
	deploy/check

pytest: $(VENV)/.installed
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python bench/http_bench.py

# Re-pin every dependency after changing pyproject.toml.
lock: $(VENV)/.installed
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(pip|setuptools|py-spy)==' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
