"""An event nobody listens to, in the worker (issue 16, item 1)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.service.broker import free_port
from agentstream.service.client import Connection, OutRecord, produce
from agentstream.service.worker import Worker
from tests.brokers import Broker
from tests.harness import Topic


class Reply(Event):
    text: str


class Twin:
    class Reply(Event):
        text: str


class Typo(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "typo":
            ctx.send_event(Twin.Reply(text="lost"))
        else:
            ctx.send_event(Reply(text=str(event.input)))

    @action(Reply)
    def finish(event: Reply, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.text))


async def test_worker_warns_once_and_counts_an_event_nobody_listens_to(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: a worker's action sends a twin event class no action listens to, for two
    inputs, between normal inputs. We expect: the normal inputs' outputs; one warning
    naming the twin type, the sending action and the class it was probably meant to be;
    the agentstream_unhandled_events_total metric at 2; nothing routed for the twin."""
    name = f"typo-{free_port()}"
    app = AgentApp(
        name,
        agent=Typo(),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path,
        embedded_broker=broker.embedded,
        fetch_wait_ms=20,
        web_port=0,
    )
    caplog.set_level(logging.WARNING, logger="agentstream.runtime.step")
    worker = Worker(app)
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        values = ["typo", "ok-1", "typo", "ok-2"]
        conn = Connection(broker.bootstrap, {}, broker.embedded)
        await produce(conn, f"{name}-in", [OutRecord("k", json.dumps(v).encode()) for v in values])
        async with Topic(broker.bootstrap, f"{name}-out") as out:
            records = await out.wait_for(2, 60, "the outputs of the two normal inputs")
        count = worker.metrics.registry.get_sample_value(
            "agentstream_unhandled_events_total", {"event_type": Twin.Reply.type_name()}
        )
    finally:
        await worker.stop()
    assert sorted(json.loads(r.value) for r in records) == ["ok-1", "ok-2"]
    assert count == 2
    warnings = [r.getMessage() for r in caplog.records if "triggers no action" in r.getMessage()]
    assert len(warnings) == 1 and Twin.Reply.type_name() in warnings[0]
    assert "'start'" in warnings[0] and f"did you mean {Reply.type_name()}" in warnings[0]
