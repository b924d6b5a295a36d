# Two commands for a fresh clone: `make demo` and `make test`. Everything else is installed here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check clean lock lock-upgrade image-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/amosync demo

# The suite in PYTEST_WORKERS processes (pytest-xdist; 0 runs it in this one). Most tests wait on
# the emulator's latency, subprocesses or PostgreSQL, so 4 workers keep 2 cores busy (measured:
# 4 workers 7 min, 3 workers 11 min, 1 process 16-17 min; docs/measurements.md); worksteal
# moves queued tests from a busy worker to an idle one, so no worker finishes with a long queue.
# Each worker has its own databases (named by its pid, tests/conftest.py).
PYTEST_WORKERS ?= 4
test: $(STAMP) lint typecheck
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check sync tests bench migrations
	$(BIN)/ruff format --check sync tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy

# The image's pinned dependencies (exact versions + sha256, deploy/Dockerfile installs only these).
# `lock` keeps every pin pyproject.toml still allows and changes only what it must;
# `lock-upgrade` moves every pin to the newest release. LOCK_DIR lets .ci/check-image compile
# into a scratch copy and diff. Python 3.11 on Linux, like the image.
LOCK_DIR     ?= deploy
PIP_COMPILE  := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
                --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: $(STAMP)
	$(PIP_COMPILE) $(LOCK_FLAGS) --output-file=$(LOCK_DIR)/requirements.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) --all-build-deps --only-build-deps \
	    --output-file=$(LOCK_DIR)/build-requirements.lock pyproject.toml

lock-upgrade:
	$(MAKE) lock LOCK_FLAGS=--upgrade

clean:
	rm -rf $(VENV) .amosync .pytest_cache .mypy_cache .ruff_cache

# The container image's cheap checks (locks current and installable with hashes, hadolint,
# the Dockerfile's and compose file's promises); CI runs them after the tests.
image-check: $(STAMP)
	VENV=$(VENV) bash .ci/check-image
