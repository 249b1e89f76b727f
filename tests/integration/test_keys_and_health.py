"""Keys on several partitions, null keys, and /health while the broker is away (issue 11)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action
from agentstream.service.broker import free_port
from agentstream.service.web import WebServer
from agentstream.service.worker import Worker
from tests.brokers import Broker
from tests.harness import Topic, wait_until


class Counts(Agent):
    """Outputs [key, input, how many inputs this key (slot) had before]."""

    @action(InputEvent)
    def run(event: InputEvent, ctx: RunnerContext) -> None:
        seen = ctx.short_term_memory.get("seen") or 0
        ctx.short_term_memory.set("seen", seen + 1)
        ctx.send_event(OutputEvent(output=[ctx.key, event.input, seen]))


def _app(broker: Broker, tmp_path: Path, name: str, **settings: Any) -> AgentApp:
    return AgentApp(
        name,
        agent=Counts(),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path / name,
        embedded_broker=broker.embedded,
        fetch_wait_ms=20,
        commit_interval_s=0.1,
        web_port=0,
        **settings,
    )


async def _produce(bootstrap: str, topic: str, records: list[tuple[str | None, Any, int]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for key, value, partition in records:
            await producer.send_and_wait(
                topic,
                value=json.dumps(value).encode(),
                key=None if key is None else key.encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


async def test_a_key_on_two_partitions_and_null_keys_lose_nothing(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: a key's 10 records alternate between partitions 2 and 3 (producers with
    different partitioners), and 12 null-key records are spread over the 4 partitions.
    We expect: all 22 inputs give an output (before the fix: 5 and 4); each partition's
    records of the key are processed in order as their own key (their own count); null
    keys are processed per partition; the key on two partitions is counted in a metric
    and named once in a warning with both partitions."""
    app = _app(broker, tmp_path, f"spread-{free_port()}")
    keyed = [("k", i, 2 + i % 2) for i in range(10)]
    nulls: list[tuple[str | None, Any, int]] = [(None, 100 + i, i % 4) for i in range(12)]
    worker = Worker(app)
    caplog.set_level(logging.WARNING, logger="agentstream.service.worker")
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        await _produce(broker.bootstrap, app.input_topic, keyed + nulls)
        async with Topic(broker.bootstrap, app.output_topic) as out:
            records = await out.wait_for(22, 60, "an output for each of the 22 inputs")
        count = worker.metrics.registry.get_sample_value(
            "agentstream_keys_on_several_partitions_total"
        )
    finally:
        await worker.stop()
    outputs = [json.loads(r.value) for r in records]
    of_k = [(value, seen) for key, value, seen in outputs if key == "k"]
    assert sorted(v for v, _ in of_k) == list(range(10))
    for parity in (0, 1):  # each partition's records: in order, counted as their own key
        assert [(v, s) for v, s in of_k if v % 2 == parity] == [
            (v, n) for n, v in enumerate(range(parity, 10, 2))
        ]
    assert sorted(value for key, value, _ in outputs if key is None) == list(range(100, 112))
    assert count is not None and count >= 5
    warnings = [r.getMessage() for r in caplog.records if "input partitions" in r.getMessage()]
    assert len(warnings) == 1 and "'k'" in warnings[0]
    assert "partitions 2 and 3" in warnings[0] or "partitions 3 and 2" in warnings[0]


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_health_reports_an_unreachable_broker_and_recovers(
    broker: Broker, tmp_path: Path
) -> None:
    """Scenario: the broker stops answering (SIGSTOP) under a ready worker, then resumes.
    We expect: /health answers 503 "broker-unreachable" with the reason once the grace
    period passed, and 200 "ready" again after the broker is back; the worker is not
    restarted and goes on processing."""
    app = _app(broker, tmp_path, f"health-{free_port()}", broker_unreachable_grace_s=1.0)
    worker = Worker(app)
    port = free_port()
    server = WebServer(worker, "127.0.0.1", port)
    await server.start()
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        await wait_until(
            lambda: asyncio.to_thread(lambda: _health(port)[0] == 200), 30, "/health ready"
        )
        broker.pause()
        try:
            await wait_until(
                lambda: asyncio.to_thread(lambda: _health(port)[0] == 503),
                30,
                "/health to report the paused broker",
            )
            status, body = await asyncio.to_thread(_health, port)
            assert status == 503 and body["status"] == "broker-unreachable"
            assert "no answer from the broker" in body["reason"]
        finally:
            broker.resume()
        await wait_until(
            lambda: asyncio.to_thread(lambda: _health(port)[0] == 200),
            60,
            "/health ready again after the broker resumed",
        )
        await _produce(broker.bootstrap, app.input_topic, [("after", 1, 0)])
        async with Topic(broker.bootstrap, app.output_topic) as out:
            await out.wait_for(1, 60, "the output of an input sent after the outage")
        assert worker.error is None
    finally:
        await worker.stop()
        await server.stop()
