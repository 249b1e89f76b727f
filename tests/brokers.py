"""Broker fixtures of the integration and chaos tiers (their conftests import them).

``broker`` is parametrized: every test that uses it runs on the embedded development broker
(Tansu) and on a real Apache Kafka (``tools/kafka``), so nothing passes only thanks to one
broker's quirks. The real broker is skipped, with one line in the report header
(tests/conftest.py), where ``java`` or ``mvn`` is missing;
``AGENTSTREAM_TEST_BOOTSTRAP=host:port`` runs it on an existing cluster instead of one
started here.

- ``broker``: module-scoped. A fresh embedded broker per module (its memory only grows);
  one real Kafka for the whole session (topics and groups are uniquely named).
- ``kafka_cluster``: three real brokers (replication factor 3, ``min.insync.replicas=2``)
  whose nodes a chaos test may pause, kill and restart.
- ``topic_factory``: uniquely named topics on the module's broker.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentstream.service.broker import EmbeddedBroker, ensure_topics, wait_for_broker
from tools.kafka import KafkaCluster, missing_tools

BOOTSTRAP_ENV = "AGENTSTREAM_TEST_BOOTSTRAP"
"""``host:port[,...]`` of an existing Kafka cluster for the real tier."""

KEEP_ENV = "AGENTSTREAM_TEST_KAFKA_DIR"
"""A directory where the real Kafka started here keeps its data and logs (for debugging)."""

BROKERS_ENV = "AGENTSTREAM_TEST_BROKERS"
"""Which brokers ``broker`` runs on, comma separated (default ``embedded,kafka``)."""

BROKER_KINDS = tuple(os.environ.get(BROKERS_ENV, "embedded,kafka").split(","))


def real_kafka_skip_reason() -> str | None:
    """Why the real-Kafka tier cannot run here, or None when it can."""
    if os.environ.get(BOOTSTRAP_ENV):
        return None
    missing = missing_tools()
    if missing:
        return f"{' and '.join(missing)} not found (a JDK 17+ and Maven run Apache Kafka)"
    return None


@dataclass
class Broker:
    """The broker a test runs against, whichever kind it is.

    Attributes:
        kind: ``"embedded"`` (Tansu) or ``"kafka"`` (Apache Kafka).
        bootstrap: ``host:port[,...]``.
        process: what runs it: an :class:`EmbeddedBroker`, a :class:`KafkaCluster`, or None
            for an existing cluster (``AGENTSTREAM_TEST_BOOTSTRAP``), which tests cannot
            pause or kill.
    """

    kind: str
    bootstrap: str
    process: EmbeddedBroker | KafkaCluster | None

    @property
    def embedded(self) -> bool:
        """Whether agentstream must apply the embedded broker's workarounds."""
        return self.kind == "embedded"

    @property
    def url(self) -> str:
        """``kafka://host:port[,...]``, for agentstream's ``--broker``."""
        return f"kafka://{self.bootstrap}"

    @property
    def port(self) -> int:
        """The port of the first (or only) node."""
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self.process is None or self.process.running

    def pause(self) -> None:
        """Freeze the broker (every node) with SIGSTOP."""
        self._owned().pause()

    def resume(self) -> None:
        self._owned().resume()

    def _owned(self) -> EmbeddedBroker | KafkaCluster:
        if self.process is None:
            pytest.skip(f"needs a broker this suite started, not {BOOTSTRAP_ENV}")
        return self.process

    def __repr__(self) -> str:
        return f"<Broker {self.kind} {self.bootstrap}>"


def _keep_dir(name: str) -> Path | None:
    root = os.environ.get(KEEP_ENV)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)) if root else None


def _require_real_kafka() -> None:
    if "kafka" not in BROKER_KINDS:
        pytest.skip(f"real-Kafka tier not selected ({BROKERS_ENV}={','.join(BROKER_KINDS)})")
    reason = real_kafka_skip_reason()
    if reason is not None:
        pytest.skip(f"real-Kafka tier: {reason}")


_session_kafka: list[Broker] = []  # each tier's conftest registers the fixture anew: share


@pytest.fixture(scope="session")
def real_kafka(request: pytest.FixtureRequest) -> Broker:
    """One real Kafka for the session: started here, or the one named by the environment."""
    _require_real_kafka()
    if _session_kafka:
        return _session_kafka[0]
    existing = os.environ.get(BOOTSTRAP_ENV)
    if existing:
        asyncio.run(wait_for_broker(existing, timeout_s=30))
        request.addfinalizer(_session_kafka.clear)
        _session_kafka.append(Broker("kafka", existing, None))
        return _session_kafka[0]
    cluster = KafkaCluster(brokers=1, data_dir=_keep_dir("single")).start()
    request.addfinalizer(cluster.stop)
    request.addfinalizer(_session_kafka.clear)
    _session_kafka.append(Broker("kafka", cluster.bootstrap, cluster))
    return _session_kafka[0]


@pytest.fixture(scope="module", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Each module's tests run on the embedded broker and on a real Kafka."""
    if request.param == "kafka":
        yield request.getfixturevalue("real_kafka")
        return
    with EmbeddedBroker() as running:
        yield Broker("embedded", running.bootstrap, running)


@pytest.fixture(scope="module")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """Three real brokers (replication factor 3, min.insync.replicas=2) for chaos tests."""
    _require_real_kafka()
    if os.environ.get(BOOTSTRAP_ENV):
        pytest.skip(f"needs brokers this suite can kill, not {BOOTSTRAP_ENV}")
    with KafkaCluster(brokers=3, data_dir=_keep_dir("cluster")) as cluster:
        yield cluster


@pytest.fixture
def topic_factory(
    broker: Broker, unique_name: Callable[[str], str]
) -> Callable[..., Awaitable[str]]:
    """Create a uniquely named topic on the module's broker: ``await topic_factory(4)``."""

    async def create(partitions: int = 1, base: str = "topic") -> str:
        name = unique_name(base)
        await ensure_topics(broker.bootstrap, {name: partitions})
        return name

    return create
