# Two commands on a fresh machine: `make run` and `make test` (README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: run test test-sqlite test-postgres conformance bench install translations clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP) translations

translations: $(STAMP)
	$(BIN)/pybabel compile -d idp/translations --statistics

run: install
	$(BIN)/idp init
	$(BIN)/idp serve --host 127.0.0.1 --port 8000

test: install
	$(MAKE) test-sqlite
	@if $(BIN)/python -c "import psycopg,sys; psycopg.connect('host=127.0.0.1 port=5432 user=postgres dbname=test', connect_timeout=3).close()" 2>/dev/null; then \
		$(MAKE) test-postgres; \
	else echo "PostgreSQL not reachable at 127.0.0.1:5432: PostgreSQL run skipped"; fi

test-sqlite: install
	$(BIN)/python -m pytest -q -n 2 tests

test-postgres: install
	IDP_TEST_DATABASE_URL=$(PG_URL) $(BIN)/python -m pytest -q -n 2 tests -m "not sqlite_only"

conformance: install
	$(BIN)/python -m conformance.run

bench: install
	$(BIN)/python bench/login_flow.py

clean:
	rm -rf $(VENV) instance .pytest_cache
