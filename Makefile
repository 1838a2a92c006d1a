# make run   : set everything up and serve the portal on http://127.0.0.1:5000 (SQLite)
# make test  : set everything up and run the whole suite on SQLite and PostgreSQL (browser tests included)
# make test-quick : the same without the slow browser tests (pytest -m "not slow")
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := app

.PHONY: run test test-quick setup system-deps translations compile-translations clean bench bench-quick

$(BIN)/activate: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(BIN)/activate

setup: $(BIN)/activate compile-translations

compile-translations: $(BIN)/activate
	$(BIN)/pybabel -q compile -d translations

run: setup
	$(BIN)/flask db upgrade
	$(BIN)/flask demo --if-empty
	$(BIN)/flask run --host 127.0.0.1 --port 5000

# Debian's chromium and CJK fonts for the browser tests, PostgreSQL for the second database.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing from apt:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

test: setup system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-quick: setup system-deps
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Extract new strings and merge them into both catalogs (then translate, then compile).
translations: $(BIN)/activate
	$(BIN)/pybabel -q extract -F babel.cfg -k _l --add-location=file -o translations/messages.pot .
	$(BIN)/pybabel -q update -i translations/messages.pot -d translations
	$(BIN)/python -m portal.i18n_tools fill-english translations/en/LC_MESSAGES/messages.po

clean:
	rm -rf $(VENV) .pytest_cache

# make bench       : the benchmark at full scale (1,000,000 members, SQLite; BENCH_ARGS=--pg for PostgreSQL)
# make bench-quick : about 20,000 members and 5-second runs. Both print a table and end with the line
#                    lookup/tpl=R member/tpl=R checkout/write=R dashboard_ms=N checkout_p99_ms=N (bench/README.md)
BENCH_ARGS ?=

bench: setup
	@sh bench/deps.sh "$(BENCH_ARGS)"
	$(BIN)/python bench/run.py --members 1000000 $(BENCH_ARGS)

bench-quick: setup
	@sh bench/deps.sh "$(BENCH_ARGS)"
	$(BIN)/python bench/run.py --members 20000 --quick $(BENCH_ARGS)
