# The two commands: `make run` (stack + pipeline + gRPC, then returns) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.bloasis/prefect

.PHONY: install run stop test lint proto proto-check clean soak

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/bloasis stack up
	$(BIN)/bloasis run --history-days 365
	$(BIN)/bloasis serve --background
	@echo; echo "== current regime, served over gRPC =="
	$(BIN)/bloasis get regime
	@echo; echo "== regime history, the last year, served over gRPC =="
	$(BIN)/bloasis get history
	@echo; echo "== sector analysis, served over gRPC =="
	$(BIN)/bloasis get sectors
	@echo; echo "== strategy of the demo user 'test', served over gRPC =="
	$(BIN)/bloasis get strategy --user test
	@echo; echo "Running in the background. Use it from a shell with: source .bloasis/env"
	@echo "Stop everything with: make stop"

stop:
	@if [ -x $(BIN)/bloasis ]; then $(BIN)/bloasis stop; else echo "nothing installed, nothing to stop"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bloasis flows tasks

proto: install
	$(BIN)/python scripts/gen_proto.py

proto-check: install
	$(BIN)/python scripts/gen_proto.py --check

# pytest exits 5 when it collected no test: make treats that as a failure too.
test: install lint proto-check
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Full-size load and soak of the gRPC server (make test runs a reduced one).
soak: install
	$(BIN)/python -m bench.grpc_soak

clean: stop
	rm -rf .bloasis
