"""Fixtures of every tier, and the report line saying whether the real-Kafka tier runs.

No Kafka client is imported here: the unit tier needs none. The brokers are in
tests/brokers.py, used by tests/integration/conftest.py and tests/chaos/conftest.py.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import pytest

from tools.kafka.launcher import kafka_version, missing_tools

_names = itertools.count()


_BROKER_FIXTURES = {"broker", "real_kafka", "kafka_cluster"}
_uses_brokers = False


def real_kafka_tier() -> str:
    """One line: where the real-Kafka tier runs, or why it is skipped."""
    selected = os.environ.get("AGENTSTREAM_TEST_BROKERS", "embedded,kafka")
    if "kafka" not in selected.split(","):
        return f"real-Kafka tier not selected (AGENTSTREAM_TEST_BROKERS={selected})"
    existing = os.environ.get("AGENTSTREAM_TEST_BOOTSTRAP")
    if existing:
        return f"real-Kafka tier: the existing cluster at {existing} (AGENTSTREAM_TEST_BOOTSTRAP)"
    missing = missing_tools()
    if missing:
        return (
            f"real-Kafka tier SKIPPED: {' and '.join(missing)} not found (install a JDK 17+ "
            "and Maven, or set AGENTSTREAM_TEST_BOOTSTRAP=host:port); embedded broker only"
        )
    return f"real-Kafka tier: Apache Kafka {kafka_version()} (tools/kafka) and the embedded broker"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global _uses_brokers
    _uses_brokers = any(_BROKER_FIXTURES & set(getattr(i, "fixturenames", ())) for i in items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Said once, at the end, whenever the run has tests that use a broker."""
    if _uses_brokers:
        terminalreporter.write_line(real_kafka_tier())


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names (topics, app ids) unique within the session: ``unique_name("orders")``."""
    test = request.node.name.split("[")[0].removeprefix("test_")[:40]

    def make(base: str = "t") -> str:
        return f"{base}-{test}-{os.getpid()}-{next(_names)}"

    return make
