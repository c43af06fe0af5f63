# lstm-worker developer entry points. `make demo` and `make test` are all a new user needs; `make help` lists the rest.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline machines: point LSTM_TRAIN_DATA at a local 20 Newsgroups archive.
LSTM_TRAIN_DATA ?= $(if $(wildcard ../shared/data/20news-bydate.tar.gz),$(abspath ../shared/data/20news-bydate.tar.gz),20newsgroups)
export LSTM_TRAIN_DATA
# The broker of the integration and fault suites: kafka (Apache Kafka, started from the jars kafka-jars fetches)
# or tansu (the demo broker). Tests marked tansu_smoke run on Tansu as well; see docs/kafka.md.
LSTM_TEST_BROKER ?= kafka
export LSTM_TEST_BROKER

.DEFAULT_GOAL := help
.PHONY: help install kafka-jars kafka test faults deploy-check lint bench plots docs demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the project with every extra (idempotent)

# Re-runs only when pyproject.toml changes. torch==2.13.0 is the CPU wheel.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3.x"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $@

# Apache Kafka for the test suites and `make kafka`: Maven fetches the pinned release once into
# ~/.cache/lstm-worker (needs java and mvn: installed with apt-get when missing and root, else a one-line error).
kafka-jars: install ## fetch the pinned Apache Kafka release from Maven Central (cached; idempotent)
	@$(PY) -m devtools.kafka_jars

kafka: kafka-jars ## run a local Apache Kafka (PLAINTEXT, SSL, SASL_SSL) in the foreground; Ctrl-C stops it
	@$(PY) -m devtools.apache_kafka

# The data check stops at once, with one line saying what to set, when the real data is neither here nor
# downloadable. deploy/validate.sh renders and lints deploy/ (tools in .venv-deploy) before the tests assert on it.
test: install kafka-jars ## unit, integration (real broker, ONNX Runtime), deploy and docs tests (the tutorial too)
	@$(PY) -m tests.support.datasets
	deploy/validate.sh
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not faults" --durations=15 --only-listed-skips

deploy-check: ## render every overlay, schema-validate, lint, checkov (deploy/validate.sh)
	deploy/validate.sh

faults: install kafka-jars ## real processes under real faults: SIGKILL, broker freeze, poison input (CI runs it too)
	@$(PY) -m tests.support.datasets news
	$(PY) -m pytest -q -m faults tests/faults --durations=10 --only-listed-skips

lint: install ## ruff, and the layers' import contracts (pyproject.toml, [tool.importlinter])
	$(VENV)/bin/ruff check core training export worker tests bench scripts devtools
	$(VENV)/bin/lint-imports

bench: install ## throughput, latency against offered load, RSS; writes bench/results/latest.json
	$(PY) -m bench.run

plots: install ## redraw docs/img/frontier.png and latency.png from the latest bench/results JSON
	$(PY) -m bench.plots

docs: install ## regenerate docs/cli.md and docs/configuration.md from the commands (a test checks them)
	$(PY) scripts/cli_docs.py

demo: install ## local broker, quick model, export, 3,000 real documents through the worker
	$(PY) scripts/demo.py

clean: ## remove .venv, .venv-deploy, artifacts/ and caches
	rm -rf $(VENV) .venv-deploy artifacts .pytest_cache
