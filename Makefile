# Two entry points on a fresh machine: `make run` and `make test`. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
PYTEST_ARGS ?=

.PHONY: install system-deps kafka-jars run test test-unit test-integration test-faults lint bench lock clean

install: system-deps $(STAMP) kafka-jars

# Debian packages: PostgreSQL (the local database), Chromium's headless shell (the browser tiers;
# Playwright cannot download its own browsers here) and the full Chromium (headful runs, and the
# bench's reference loop), Maven/Java (the local Kafka broker) and tinyproxy (a real forward
# proxy for the egress-pool tests).
system-deps:
	@missing=""; \
	[ -n "$(PG_INITDB)" ] || missing="$$missing postgresql"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -x /usr/bin/chromium-headless-shell ] || missing="$$missing chromium-headless-shell"; \
	command -v tinyproxy >/dev/null || missing="$$missing tinyproxy"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "please run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

# Exactly the versions in requirements.lock (hash-checked), then the package itself without
# resolving anything. `pip check` catches a dependency of pyproject.toml the lock lacks (only
# scrapifie's own lines: bench tools installed over the venv may want other versions).
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@if $(PY) -m pip check | grep '^scrapifie '; then \
	  echo "requirements.lock does not satisfy pyproject.toml: run make lock" >&2; exit 1; fi
	@touch $(STAMP)

# Re-resolve the locks on purpose (uv, installed into the venv on demand). By default every
# package moves to the newest version pyproject.toml allows; LOCK_ARGS= keeps the pins and only
# follows edits to pyproject.toml; LOCK_ARGS='--upgrade-package aiohttp' moves one package.
# Review the diff and run the tests: the next make installs it. The bench lock is resolved the
# same way with the bench extra added, so it differs only where the bench tools need other
# versions; `make bench` installs it over the venv. Universal: one lock for every platform and
# Python >= 3.11.
LOCK_ARGS ?= --upgrade
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock" $(LOCK_ARGS)
lock:
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV_COMPILE) --extra dev -o requirements.lock
	$(UV_COMPILE) --extra dev --extra bench -o requirements-bench.lock

# Resolve the pinned Kafka broker jars into ~/.m2 (cached across runs).
kafka-jars:
	@mvn -q -B -f deploy/kafka/pom.xml dependency:resolve >/dev/null || \
	  (echo "Maven could not resolve Kafka's jars (deploy/kafka/pom.xml)" >&2; exit 1)

run: install
	$(VENV)/bin/scrapifie up

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: install lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-faults: install
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

# Benchmarks (never part of `make test`): see bench/README.md.
bench: install
	$(PY) -m pip install -q -r requirements-bench.lock
	$(PY) -m bench

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
