# Two commands on a fresh machine: `make run` and `make test` (README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# `make run PORT=8001` moves the issuer with the port (an IDP_ISSUER already set wins).
PORT ?= 8000

.PHONY: run test test-sqlite test-postgres conformance bench fuzz install translations messages browser-deps interop-deps clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) translations

translations: $(STAMP)
	$(BIN)/pybabel compile -d idp/translations --statistics

# After changing any text in idp/: refresh the catalogues, then translate the new Japanese entries.
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k lazy_gettext --no-location --sort-output -o idp/translations/messages.pot .
	$(BIN)/pybabel update -i idp/translations/messages.pot -d idp/translations --no-fuzzy-matching --ignore-obsolete

# axe-core for the browser tests' accessibility checks (tests/browser/node_modules, git-ignored).
browser-deps:
	@if [ -f tests/browser/node_modules/axe-core/axe.min.js ]; then :; \
	elif command -v npm >/dev/null 2>&1; then npm --prefix tests/browser ci --no-audit --no-fund --loglevel=error || echo "axe-core not installed: accessibility checks will be skipped"; \
	else echo "npm not found: accessibility checks will be skipped"; fi

# panva/openid-client for the FAPI 2.0 interop test (tests/interop/node_modules, git-ignored).
interop-deps:
	@if [ -f tests/interop/node_modules/openid-client/package.json ]; then :; \
	elif command -v npm >/dev/null 2>&1; then npm --prefix tests/interop ci --no-audit --no-fund --loglevel=error || echo "openid-client not installed: the interop test will be skipped"; \
	else echo "npm not found: the openid-client interop test will be skipped"; fi

run: export IDP_ISSUER ?= http://localhost:$(PORT)
run: install
	$(BIN)/idp init
	@echo "Open http://localhost:$(PORT)/demo/ (the passkey works at localhost, not 127.0.0.1)"
	$(BIN)/idp serve --host 127.0.0.1 --port $(PORT)

test: install browser-deps interop-deps
	$(MAKE) test-sqlite
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('host=127.0.0.1 port=5432 user=postgres dbname=test', connect_timeout=3).close()" 2>/dev/null; then \
		$(MAKE) test-postgres; \
	else echo "PostgreSQL not reachable at 127.0.0.1:5432: PostgreSQL run skipped"; fi

test-sqlite: install
	$(BIN)/python -m pytest -q -n 2 tests examples

test-postgres: install
	IDP_TEST_DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest -q -n 2 tests examples -m "not sqlite_only"

conformance: install
	$(BIN)/python -m conformance.run

# Schemathesis over /openapi.json against a real `idp serve`: >= 10,000 generated requests per
# database, 0 answers >= 500, no traceback in the server log (tests/fuzz/run.py).
fuzz: install
	$(BIN)/python -m tests.fuzz.run
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('host=127.0.0.1 port=5432 user=postgres dbname=test', connect_timeout=3).close()" 2>/dev/null; then \
		IDP_TEST_DATABASE_URL=$(PG_URL) $(BIN)/python -m tests.fuzz.run; \
	else echo "PostgreSQL not reachable at 127.0.0.1:5432: PostgreSQL fuzz skipped"; fi

bench: install
	$(BIN)/python bench/endpoint_cost.py
	$(BIN)/python bench/login_flow.py

clean:
	rm -rf $(VENV) instance .pytest_cache
