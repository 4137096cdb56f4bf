# Signal Dash — two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-sqlite test-postgres install lint check bench screenshots clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	@# The demo warehouse (readouts/sources/demo.py): Parquet files read by an in-memory DuckDB.
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable
	$(PY) manage.py seed_demo
	$(PY) manage.py collectstatic --noinput -v0
	@echo "Serving Signal Dash on http://127.0.0.1:8000  (Ctrl-C to stop)"
	SIGNALDASH_DEMO_LAKE_URL=$${SIGNALDASH_DEMO_LAKE_URL:-duckdb:///:memory:} DEBUG=1 $(PY) manage.py runserver 127.0.0.1:8000

check: install
	$(PY) manage.py check
	DJANGO_SETTINGS_MODULE=signaldash.settings $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m ruff check .

lint: check

test-sqlite: install
	@echo "=== SQLite pass (embedded default) ==="
	env -u DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS)

test-postgres: install
	$(PY) tests/pgcluster.py -- $(PY) -m pytest $(PYTEST_ARGS)

test: check test-sqlite test-postgres
	@echo "=== make test: all passes finished ==="

bench: install
	$(PY) bench/run.py

# Refresh docs/screenshots/*.png from a throwaway demo database (needs Debian's chromium; not part of `make test`).
screenshots: install
	$(PY) docs/screenshots/make_screenshots.py

clean:
	rm -rf $(VENV) .venv-spark demo-lake .pytest_cache .ruff_cache .test-db.sqlite3* *.egg-info
