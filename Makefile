# lstm-worker developer entry points. `make demo` and `make test` are all a new user needs.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline machines: point LSTM_TRAIN_DATA at a local 20 Newsgroups archive.
LSTM_TRAIN_DATA ?= $(if $(wildcard ../shared/data/20news-bydate.tar.gz),$(abspath ../shared/data/20news-bydate.tar.gz),20newsgroups)
export LSTM_TRAIN_DATA

.PHONY: install test faults deploy-check lint bench demo clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch==2.13.0 is the CPU wheel.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3.x"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $@

# deploy/validate.sh renders and lints deploy/ (tools in .venv-deploy) before the tests assert on it.
test: install
	deploy/validate.sh
	$(PY) -m pytest -q -m "not faults"

deploy-check:
	deploy/validate.sh

# Real processes under real faults (SIGKILL, broker freeze, poison input); CI runs it too.
faults: install
	$(PY) -m pytest -q -m faults tests/faults

lint: install
	$(VENV)/bin/ruff check core training export worker tests bench scripts

bench: install
	$(PY) -m bench.run

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .venv-deploy artifacts .pytest_cache
