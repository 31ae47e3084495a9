# rtscore — `make help` lists the targets. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test unit integration lint typecheck infra-up infra-down infra-status clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null && command -v kcat >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian packages redis-server kcat prometheus (for promtool)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server kcat prometheus >/dev/null; }
	@command -v java >/dev/null || { echo "Java 17+ is needed for the local Kafka broker: apt-get install openjdk-17-jre-headless"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch the broker's jars: apt-get install maven"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP) ## Python packages into .venv, redis-server, kcat and promtool when missing

demo: $(STAMP) ## the fraud demo end to end: local Kafka + Redis, history, training, live scoring
	$(BIN)/rtscore demo

test: $(STAMP) ## every test: unit (no network), integration and e2e on a real Kafka + Redis
	$(BIN)/python -m pytest

unit: $(STAMP) ## only the unit tests (no network)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP) ## only the integration and e2e tests
	$(BIN)/python -m pytest tests/integration tests/e2e

lint: $(STAMP) ## ruff
	$(BIN)/ruff check streams models tests

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy

infra-up: $(STAMP) ## start local Kafka + Redis (reuses running ones)
	$(BIN)/rtscore infra up

infra-down: $(STAMP) ## stop what infra-up started
	$(BIN)/rtscore infra down

infra-status: $(STAMP) ## show local Kafka + Redis
	$(BIN)/rtscore infra status

clean: ## stop local infra, remove .venv and local state (.rtscore/)
	-$(BIN)/rtscore infra down
	rm -rf $(VENV) .rtscore
