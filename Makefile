# The two commands of the README: `make run` and `make test`. Everything they need is
# installed here from the package registries, so a fresh clone with Python 3.11+, make
# and npm is enough (and, for the dashboard's browser tests, Debian's chromium: `make
# tools` installs it with apt-get when run as root, and fails otherwise).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
AZURITE := .tools/node_modules/.bin/azurite-blob

.PHONY: run test lint typecheck pytest tools proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Azurite (Azure blob emulator) for the storage conformance suite.
$(AZURITE):
	mkdir -p .tools
	cd .tools && npm install --no-audit --no-fund --silent azurite@3 >/dev/null

# Debian's chromium for the dashboard's browser tests (tests/io/http): Playwright drives
# it; Playwright's own browser download is never used. Missing and not installable is a
# failure, never a skipped test.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  command -v chromium >/dev/null 2>&1 || { \
	    echo "chromium is missing: install Debian's chromium package (apt-get install chromium)"; \
	    exit 1; }; }

tools: $(AZURITE) chromium

run: $(STAMP)
	$(BIN)/python -m examples.embedded

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite on every core, up to four (pytest-xdist: README.md, "Layout").
# PYTEST_ARGS="-n 0 tests/..." runs a part in one process.
PYTEST_ARGS ?= -n auto --maxprocesses 4

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
pytest: $(STAMP) tools
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: lint typecheck pytest

# The crash soak's long profile (docs/reliability.md): SIGKILL a loaded broker process
# hundreds of times on a local directory, then on moto's S3 server; drain; check the
# storage against every acknowledgement. Both runs go ahead; either failing fails.
# Reproduce a run's plan with SOAK_ARGS="--seed N".
.PHONY: soak
SOAK_ROUNDS ?= 300
SOAK_S3_ROUNDS ?= 300
SOAK_ARGS ?=
soak: $(STAMP)
	@rc=0; \
	$(BIN)/python -m tests.io.soak --store local --rounds $(SOAK_ROUNDS) $(SOAK_ARGS) || rc=1; \
	$(BIN)/python -m tests.io.soak --store s3 --rounds $(SOAK_S3_ROUNDS) $(SOAK_ARGS) || rc=1; \
	exit $$rc

# Refresh docs/screenshots/ from the dashboard's browser tests (a broker's, a group's).
.PHONY: screenshots
screenshots: $(STAMP) chromium
	OSQUEUE_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q \
	  tests/io/http/test_dashboard_browser.py tests/io/http/test_group_dashboard.py

# Regenerate the betterproto2 code from proto/ (commit the result).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .hypothesis
