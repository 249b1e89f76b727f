# agentstream — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit lint bench bench-local clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m agentstream demo examples.greeter:app

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check agentstream tests examples
	$(BIN)/ruff format --check agentstream tests examples
	$(BIN)/mypy
	$(BIN)/ruff check docs
	$(BIN)/ruff format --check docs
	$(BIN)/python docs/gen_cli.py --check
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint --strict -c deploy/.yamllint.yaml deploy
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml
	$(BIN)/kubernetes-validate --strict --quiet --no-warn -k 1.28 deploy/k8s/*.yaml

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.kafka

bench-local: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.local

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data
