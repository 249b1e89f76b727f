"""Client-side helpers behind ``agentstream send`` and ``demo`` (reading topics, for ``tail``
and ``dead-letters``, is :mod:`agentstream.service.reader`).

They need a broker and topic names, not the app's import: the CLI passes an app's topics
and codecs when it has one. Kafka errors are translated at this boundary
(:func:`~agentstream.service.kafka_errors.kafka_errors`); "no broker there" is
:class:`NoBroker`, which the CLI prints as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.service.app import AgentApp
from agentstream.service.broker import admin_client, client_settings
from agentstream.service.codecs import codec_for, encode_key
from agentstream.service.kafka_errors import kafka_errors

__all__ = [
    "Connection",
    "NoBroker",
    "OutRecord",
    "UnknownTopic",
    "produce",
    "run_demo",
    "send_records",
]

log = logging.getLogger(__name__)


class NoBroker(BrokerError):
    """No broker answered at the bootstrap address."""

    def __init__(self, bootstrap: str):
        super().__init__(f"no broker at {bootstrap} (start one with `agentstream broker`)")
        self.bootstrap = bootstrap


class UnknownTopic(ConfigurationError):
    """The topic does not exist; the message names the known ones."""

    def __init__(self, topic: str, known: Iterable[str]):
        names = sorted(t for t in known if not t.startswith("__"))
        super().__init__(
            f"topic {topic!r} does not exist; known topics: {', '.join(names) or '(none)'}"
        )
        self.topic = topic


@dataclass(frozen=True)
class Connection:
    """Where the broker is and how to talk to it."""

    bootstrap: str
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False

    @classmethod
    def of(cls, app: AgentApp) -> Connection:
        s = app.settings
        return cls(",".join(s.bootstrap_servers), s.client_kwargs(), s.embedded_broker)


@contextlib.asynccontextmanager
async def _connected(conn: Connection, what: str) -> AsyncIterator[None]:
    """Kafka errors as agentstream's; an unreachable bootstrap as :class:`NoBroker`."""
    try:
        with kafka_errors(what):
            yield
    except BrokerError as exc:
        if isinstance(exc.__cause__, KafkaConnectionError):
            raise NoBroker(conn.bootstrap) from exc.__cause__
        raise


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Start a client; one that cannot start is closed (no "unclosed client" warning)."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


async def topic_partitions(conn: Connection) -> dict[str, list[int]]:
    """Every topic on the broker with its partitions (a metadata request for all topics:
    nothing is auto-created)."""
    async with _connected(conn, "list the topics"):
        try:
            async with admin_client(conn.bootstrap, conn.client_kwargs) as admin:
                described = await admin.describe_topics(None)
        except BrokerError:
            raise
        except (OSError, TimeoutError) as exc:
            raise NoBroker(conn.bootstrap) from exc
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if not t.get("error_code")
    }


async def topic_names(conn: Connection) -> set[str]:
    """Every topic on the broker."""
    return set(await topic_partitions(conn))


async def require_topic(conn: Connection, topic: str) -> None:
    """Fail fast, naming the known topics, if ``topic`` does not exist."""
    known = await topic_names(conn)
    if topic not in known:
        raise UnknownTopic(topic, known)


@dataclass(frozen=True)
class OutRecord:
    """A record to produce."""

    key: Any
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_ms: int | None = None
    partition: int | None = None


async def produce(
    conn: Connection,
    topic: str,
    records: Iterable[OutRecord],
    sent: Callable[[OutRecord, int, int], None] | None = None,
) -> int:
    """Produce ``records`` to ``topic`` in order; ``sent(record, partition, offset)`` is
    called as each is acknowledged. Returns how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=conn.bootstrap,
        **client_settings(conn.embedded, conn.client_kwargs, kind="producer"),
    )
    count = 0
    async with _connected(conn, "send records"):
        await _start(producer)
        try:
            for record in records:
                meta = await producer.send_and_wait(
                    topic,
                    value=record.value,
                    key=encode_key(record.key),
                    headers=list(record.headers) or None,
                    timestamp_ms=record.timestamp_ms,
                    partition=record.partition,
                )
                count += 1
                if sent is not None:
                    sent(record, meta.partition, meta.offset)
        finally:
            await producer.stop()
    return count


async def send_records(app: AgentApp, records: Iterable[tuple[Any, bytes, int | None]]) -> None:
    """Produce (key, encoded value, timestamp ms) records to the app's input topic
    (creating the app's topics where missing)."""
    conn = Connection.of(app)
    async with _connected(conn, "create the app's topics"):
        # As a worker does: existing topics as they are (a grown input topic is fine).
        await app.create_topics(conn.bootstrap, dict(conn.client_kwargs))
    await produce(conn, app.input_topic, (OutRecord(k, v, (), t) for k, v, t in records))


async def run_demo(app: AgentApp, data_dir: Path | None) -> None:
    from agentstream.service.reader import follow

    """Start the embedded broker and a worker, feed the app's samples, print the outputs."""
    from agentstream.service.broker import EmbeddedBroker
    from agentstream.service.worker import Worker

    samples = app.samples
    if not samples:
        raise ConfigurationError(
            f"app {app.name!r} declares no samples to send: give it some, "
            "AgentApp(..., samples=[(key, value), ...])"
        )
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        state = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        app.configure(broker=broker.url, data_dir=state, embedded_broker=True, web_port=0)
        print(f"embedded broker on {broker.url}; starting a worker of {app.name}")
        worker = Worker(app)
        await worker.start()
        try:
            await asyncio.wait_for(worker.ready.wait(), 30)
            codec = codec_for(app.settings.input_codec)
            now = int(time.time() * 1000)
            await send_records(
                app, [(k, codec.encode(v), now + i) for i, (k, v) in enumerate(samples)]
            )
            print(f"sent {len(samples)} records to {app.input_topic}: {samples}")
            print(f"outputs on {app.output_topic}:")
            count = await asyncio.wait_for(
                follow(
                    app,
                    lambda r: print(f"  {r['key']} -> {r['value']}"),
                    max_records=len(samples),
                    idle_timeout_s=20,
                ),
                60,
            )
            print(f"{count} outputs")
        finally:
            await worker.stop()
