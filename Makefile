# The two commands of the README: `make run` and `make test`. Everything they need is
# installed here from the package registries, so a fresh clone with Python 3.11+, make
# and npm is enough.
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

tools: $(AZURITE)

run: $(STAMP)
	$(BIN)/python -m examples.embedded

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

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

# Regenerate the betterproto2 code from proto/ (commit the result).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .hypothesis
