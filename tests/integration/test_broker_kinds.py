"""The embedded broker's workarounds apply there and only there (BROKER.md).

On a real Kafka a worker runs as Kafka's own clients would: idempotent producers, aiokafka's
default session, heartbeat and request timeouts, and ListOffsets answers that can be trusted.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action
from agentstream.service.broker import (
    EMBEDDED_BROKER_CLIENT_SETTINGS,
    ensure_topics,
    is_embedded_broker,
)
from agentstream.service.worker import Worker
from tests.brokers import Broker
from tests.harness import Topic


class Echo(Agent):
    @action(InputEvent)
    def echo(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.input))


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every aiokafka producer and consumer created while the test runs."""
    created: list[Any] = []
    for cls in (AIOKafkaProducer, AIOKafkaConsumer):
        original = cls.__init__

        def init(self: Any, *args: Any, _original: Callable[..., None] = original, **kw: Any):
            created.append(self)
            _original(self, *args, **kw)

        monkeypatch.setattr(cls, "__init__", init)
    yield created


_TIMEOUTS = ("session_timeout_ms", "heartbeat_interval_ms", "request_timeout_ms")
_DEFAULT_TIMEOUTS = {
    name: inspect.signature(AIOKafkaConsumer.__init__).parameters[name].default
    for name in _TIMEOUTS
}  # read before the fixture below wraps __init__


async def test_workarounds_apply_only_on_the_embedded_broker(
    broker: Broker, clients: list[Any], tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a worker starts on each broker, which it detects as `agentstream worker`
    does, and processes one input.

    We expect: on the embedded broker, Tansu's workarounds (a non-idempotent producer, 2 s
    sessions, a 5 s request timeout); on a real Kafka none of them: an idempotent producer
    and aiokafka's default timeouts in the consumer group.
    """
    assert await is_embedded_broker(broker.bootstrap) == broker.embedded
    name = unique_name("kinds")
    app = AgentApp(
        name,
        agent=Echo(),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path,
        embedded_broker=await is_embedded_broker(broker.bootstrap),
        web_port=0,
    )
    await ensure_topics(broker.bootstrap, app.topics())
    worker = Worker(app)
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        started = list(clients)  # the worker's clients, not the test's below
        async with Topic(broker.bootstrap, app.output_topic) as out:
            producer = AIOKafkaProducer(
                bootstrap_servers=broker.bootstrap, enable_idempotence=False
            )
            await producer.start()
            await producer.send_and_wait(app.input_topic, b'"hello"', key=b"k")
            await producer.stop()
            await out.wait_for(1, 60, "the output of one input")
    finally:
        await worker.stop()

    producers = [c for c in started if isinstance(c, AIOKafkaProducer)]
    group = [c for c in started if isinstance(c, AIOKafkaConsumer) and c._group_id == name]
    assert producers and len(group) == 1, (producers, group)
    idempotent = {p._txn_manager is not None for p in producers}
    consumer = group[0]
    timeouts = {name: getattr(consumer, f"_{name}") for name in _TIMEOUTS}
    if broker.embedded:
        assert idempotent == {False}
        workarounds = EMBEDDED_BROKER_CLIENT_SETTINGS["consumer"]
        assert timeouts == {k: workarounds[k] for k in timeouts}
    else:
        assert idempotent == {True}
        assert timeouts == _DEFAULT_TIMEOUTS


async def test_list_offsets_end_matches_the_fetch_high_watermark(
    broker: Broker, topic_factory: Callable[..., Any]
) -> None:
    """Scenario: five records are written in one batch.

    We expect: the Fetch high watermark is 5 on both brokers; on a real Kafka ListOffsets
    (``end_offsets()``) says 5 too. (Tansu answers the newest batch's base offset + 1.)
    """
    topic = await topic_factory(1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(5):
            batch.append(key=None, value=str(i).encode(), timestamp=None)
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        fetched = await consumer.getmany(tp, timeout_ms=5000)
        assert len(fetched.get(tp, [])) == 5
        assert consumer.highwater(tp) == 5
        if not broker.embedded:
            assert (await consumer.end_offsets([tp]))[tp] == 5
    finally:
        await consumer.stop()


async def test_internal_events_are_stamped_on_append(
    broker: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a worker creates its topics; its inputs may carry event times older than a
    real Kafka's retention (7 days by record timestamp by default).

    We expect: the internal events topic is created with ``LogAppendTime``, so a routed
    event is never deleted at the next retention check before it is read (it would stall
    its key). Outputs keep the input's event time (that is what consumers see).
    """
    if broker.embedded:
        pytest.skip("the embedded broker stores topic configs but enforces none")
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    name = unique_name("stamp")
    app = AgentApp(
        name,
        agent=Echo(),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path,
    )
    await app.create_topics(broker.bootstrap, {})
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, app.internal_topic)]
        )
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert configs["message.timestamp.type"] == "LogAppendTime"


async def test_embedded_workarounds_on_a_real_kafka_fail_clearly(
    broker: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a worker is told the broker is the embedded one (``--embedded-broker``)
    but runs against a real Kafka, which refuses its 2 s consumer session.

    We expect: start fails with a ConfigurationError that says what happened and what to
    do (drop ``--embedded-broker``), not a bare ``InvalidSessionTimeoutError``; the
    worker's clients are closed.
    """
    if broker.embedded:
        pytest.skip("the embedded broker accepts its own workarounds")
    from agentstream.errors import ConfigurationError

    name = unique_name("wrongkind")
    app = AgentApp(
        name,
        agent=Echo(),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path,
        embedded_broker=True,
        web_port=0,
    )
    await ensure_topics(broker.bootstrap, app.topics())
    worker = Worker(app)
    with pytest.raises(ConfigurationError, match="drop --embedded-broker") as caught:
        await asyncio.wait_for(worker.start(), 60)
    assert "group.min.session.timeout.ms" in str(caught.value)
    assert worker.stopped.is_set()
    assert worker._producer is not None and worker._producer._closed
