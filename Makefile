# Two entry points for a fresh clone: `make sandbox` runs the product, `make test` runs the suite.
# Both create .venv and install what they need on first use.
# the first interpreter that actually runs and is 3.11+ (a version manager's shim may not)
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox test lint typecheck check bench bench-activator clean prometheus deploy-check

# uv installs in seconds where pip takes half a minute or more: the uv on PATH if there is one,
# else `bootstrap` (pip installs uv into the venv, then uv installs the rest); pip alone if
# that fails, or with `make UV=`.
UV ?= $(shell command -v uv 2>/dev/null || echo bootstrap)
EXTRAS := .[dev,sandbox]
# ARGS go to the sandbox: make sandbox ARGS="--http-addr 127.0.0.1:9090"
ARGS ?=

# One line per step and the time taken; each tool's own output (setuptools' and pip's warnings
# included) goes to a log that is shown only if the step fails.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	@set -e; started=$$(date +%s); log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	step() { \
		echo "$$1"; shift; \
		"$$@" >"$$log" 2>&1 || { cat "$$log" >&2; echo "failed: $$*" >&2; return 1; }; \
	}; \
	python=$$(command -v $(PYTHON)); uv="$(UV)"; \
	if [ "$$uv" = bootstrap ]; then \
		step "creating $(VENV) ($$python)" "$$python" -m venv $(VENV); \
		step "installing uv into $(VENV) (it installs the rest faster than pip)" \
			$(BIN)/python -m pip install --quiet uv && uv=$(BIN)/uv || uv=; \
	elif [ -n "$$uv" ]; then \
		step "creating $(VENV) with uv ($$python)" \
			sh -c 'test -x "$$2/bin/python" || "$$1" venv --quiet --python "$$3" "$$2"' \
			_ "$$uv" "$(VENV)" "$$python" || uv=; \
	fi; \
	if [ -n "$$uv" ] && step "installing the project with its dev and sandbox extras (uv)" \
			"$$uv" pip install --quiet --python $(BIN)/python -e '$(EXTRAS)'; then :; \
	else \
		if [ -n "$(UV)" ]; then echo "uv failed (above): installing with pip instead"; fi; \
		step "setting up $(VENV) with pip ($$python)" "$$python" -m venv $(VENV); \
		step "updating pip" $(BIN)/python -m pip install --quiet --upgrade pip; \
		step "installing the project with its dev and sandbox extras (pip: a minute or two)" \
			$(BIN)/python -m pip install --quiet -e '$(EXTRAS)'; \
	fi; \
	touch $(STAMP); \
	echo "$(VENV) ready in $$(( $$(date +%s) - started )) s"

sandbox: $(STAMP)
	$(BIN)/infra-controller sandbox $(ARGS)

# the alert tests (tests/deploy) run a real Prometheus: installed with the suite's first run
test: $(STAMP) prometheus
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck deploy-check test

# promtool and prometheus (Debian's prometheus package), when missing; without them the suite
# still runs, and the tests that need them fail saying so
prometheus:
	@deploy/install-prometheus.sh || echo "promtool and prometheus are missing: the alert tests (tests/deploy) will fail" >&2

# the deployment's checks without terraform or docker: promtool, checkov, hadolint
deploy-check: $(STAMP)
	@VENV=$(VENV) deploy/checks.sh

bench: $(STAMP)
	$(BIN)/python bench/api_calls.py

bench-activator: $(STAMP)
	$(BIN)/python bench/activator.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
