"""The brokers and topic administration, against a real Tansu process and a real Kafka."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.service.broker import (
    EMBEDDED_BROKER_CLIENT_SETTINGS,
    EmbeddedBroker,
    client_settings,
    ensure_topics,
    is_embedded_broker,
    wait_for_broker,
)
from tests.brokers import Broker


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_broker_answers_metadata(broker: Broker) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    await wait_for_broker(broker.bootstrap, timeout_s=5)
    assert await is_embedded_broker(broker.bootstrap) == broker.embedded


async def test_ensure_topics_is_idempotent(
    broker: Broker, unique_name: Callable[[str], str]
) -> None:
    topics = {unique_name("in"): 3, unique_name("out"): 1}
    await ensure_topics(broker.bootstrap, topics)
    await ensure_topics(broker.bootstrap, topics)
    assert await _partition_counts(broker.bootstrap, list(topics)) == topics


async def test_partition_count_mismatch_is_a_configuration_error(
    broker: Broker, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a topic exists with 3 partitions; 5 are required.

    We expect: a ConfigurationError naming both counts; the topic is unchanged.
    """
    name = unique_name("in")
    await ensure_topics(broker.bootstrap, {name: 3})
    with pytest.raises(ConfigurationError, match=r"3 partitions.*5 are required"):
        await ensure_topics(broker.bootstrap, {name: 5})
    assert await _partition_counts(broker.bootstrap, [name]) == {name: 3}


async def test_pause_makes_the_broker_unresponsive_until_resumed(broker: Broker) -> None:
    broker.pause()
    try:
        with pytest.raises(BrokerError, match="no Kafka broker answered"):
            await wait_for_broker(broker.bootstrap, timeout_s=0.5)
    finally:
        broker.resume()
    await wait_for_broker(broker.bootstrap, timeout_s=5)


def test_lifecycle_and_port_conflicts(broker: Broker) -> None:
    with pytest.raises(ConfigurationError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()
    second = EmbeddedBroker()
    with second:
        port, log = second.port, second.log_path
        assert log is not None and log.exists()
        assert _listening(port)
    assert not second.running
    assert not _listening(port)
    assert not log.exists()  # a temporary log is removed on stop


def test_failed_start_quotes_the_broker_output(tmp_path) -> None:
    """Scenario: the broker cannot bind its address (not local) and exits.

    We expect: a BrokerError quoting the broker's output, and the log file kept.
    """
    log = tmp_path / "broker.log"
    with pytest.raises(BrokerError, match=r"(?s)exited.*broker output.*Address not available"):
        EmbeddedBroker(port=45555, host="192.0.2.1", log_path=log).start()
    assert "tansu" in log.read_text()


def test_client_settings_apply_workarounds_only_on_the_embedded_broker() -> None:
    assert client_settings(False, {"client_id": "x"}) == {"client_id": "x"}
    assert client_settings(False, kind="producer") == {"enable_idempotence": True}
    consumer = client_settings(True, {"fetch_max_wait_ms": 50})
    assert consumer["session_timeout_ms"] == 2000
    assert consumer["fetch_max_wait_ms"] == 50  # overrides win
    assert client_settings(True, kind="producer") == {"enable_idempotence": False}
    assert dict(EMBEDDED_BROKER_CLIENT_SETTINGS["admin"]) == client_settings(True, kind="admin")
