# agentstream — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The wheel's build of the runtime (its hot path compiled with mypyc, see setup.py),
# unpacked; WITH_COMPILED runs a command against it instead of the editable sources.
COMPILED := build/compiled/.built
WITH_COMPILED := AGENTSTREAM_EXPECT_COMPILED=1 PYTHONSAFEPATH=1 \
	PYTHONPATH=$(CURDIR)/build/compiled:$(CURDIR)
PYTEST_COMPILED := $(WITH_COMPILED) $(BIN)/python -m pytest -q -p no:cacheprovider \
	--import-mode=append

.PHONY: setup run test test-unit test-compiled compiled lint bench bench-local clean \
	kafka-jars kafka-up kafka-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(COMPILED): $(STAMP) setup.py pyproject.toml $(wildcard agentstream/*.py agentstream/*/*.py)
	rm -rf build
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w build/wheel .
	$(BIN)/python -m zipfile -e build/wheel/agentstream-*.whl build/compiled
	touch $@

compiled: $(COMPILED)

run: $(STAMP)
	$(BIN)/python -m agentstream demo examples.greeter:app

# The suite twice: on the sources, then on the compiled build users install. The
# integration and chaos tiers run on the embedded broker and, where java and mvn are found,
# on a real Apache Kafka (kafka-jars fetches it once; the compiled pass skips it: the
# compiled code is the runtime, which does not depend on the broker);
# AGENTSTREAM_TEST_BOOTSTRAP=host:port runs that tier on an existing cluster instead.
test: $(STAMP) $(COMPILED) kafka-jars
	$(BIN)/python -m pytest -q
	AGENTSTREAM_TEST_BROKERS=embedded $(PYTEST_COMPILED)

test-compiled: $(COMPILED)
	$(PYTEST_COMPILED)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check agentstream tests examples tools
	$(BIN)/ruff format --check agentstream tests examples tools
	$(BIN)/mypy
	$(BIN)/ruff check docs
	$(BIN)/ruff format --check docs
	$(BIN)/python docs/gen_cli.py --check
	$(BIN)/hadolint Dockerfile
	$(BIN)/yamllint --strict -c deploy/.yamllint.yaml deploy
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose/docker-compose.yml
	$(BIN)/kubernetes-validate --strict --quiet --no-warn -k 1.28 deploy/k8s/*.yaml

# make bench BROKER=kafka: the same suite on Apache Kafka (tools/kafka), at-least-once and
# exactly-once; plain make bench runs on the embedded broker.
BROKER ?= embedded

bench: $(STAMP) $(COMPILED)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(WITH_COMPILED) $(BIN)/python -m benchmarks.kafka --broker $(BROKER)

bench-local: $(STAMP) $(COMPILED)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(WITH_COMPILED) $(BIN)/python -m benchmarks.local

# Apache Kafka from Maven Central (tools/kafka/pom.xml) into .cache/kafka: the real broker
# of the tests; kafka-up runs one in the background (its last line: bootstrap=HOST:PORT).
KAFKA := $(BIN)/python -m tools.kafka

kafka-jars: $(STAMP)
	@$(KAFKA) jars

kafka-up: $(STAMP)
	@$(KAFKA) up

kafka-down: $(STAMP)
	@$(KAFKA) down

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache data
