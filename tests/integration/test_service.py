"""The Kafka service end to end, with in-process workers (issue 3: 1, 2, 5, 7, 8)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.service.broker import free_port
from agentstream.service.web import WebServer
from agentstream.service.worker import HEADER_EVENT_ID, HEADER_WATERMARK, Worker
from tests.brokers import Broker
from tests.harness import Topic, decoded, produce, wait_until

AppFactory = Callable[..., AgentApp]


@pytest.fixture
def make_app(broker: Broker, tmp_path: Path, unique_name: Callable[[str], str]) -> AppFactory:
    def make(agent: Agent, **settings: Any) -> AgentApp:
        name = unique_name("svc")
        defaults: dict[str, Any] = dict(
            broker=broker.url,
            data_dir=tmp_path / name,
            embedded_broker=broker.embedded,
            fetch_wait_ms=20,
            commit_interval_s=0.1,
            web_port=0,
        )
        return AgentApp(
            name,
            agent=agent,
            input_topic=f"{name}-in",
            output_topic=f"{name}-out",
            **{**defaults, **settings},
        )

    return make


@contextlib.asynccontextmanager
async def running(app: AgentApp, web: bool = False) -> AsyncIterator[Worker]:
    worker = Worker(app)
    server = WebServer(worker, "127.0.0.1", free_port()) if web else None
    if server is not None:
        await server.start()
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        yield worker
    finally:
        await worker.stop()
        if server is not None:
            await server.stop()


class Hop(Event):
    value: Any
    left: int


class Ordered(Agent):
    """Each input goes through two hops of the internal topic before its output."""

    trace: list[str]

    @action(InputEvent)
    async def begin(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.get_resource("trace").append(f"begin {ctx.key} {event.input}")
        await asyncio.sleep(0.2)
        ctx.send_event(Hop(value=event.input, left=2))

    @action(Hop)
    def hop(event: Hop, ctx: RunnerContext) -> None:
        if event.left:
            ctx.send_event(Hop(value=event.value, left=event.left - 1))
        else:
            ctx.get_resource("trace").append(f"end {ctx.key} {event.value}")
            ctx.send_event(OutputEvent(output=event.value))


async def test_order_per_key_concurrency_across_keys_and_internal_topic(
    broker: Broker, make_app: AppFactory
) -> None:
    """Scenario: 20 keys x 3 inputs; each input sleeps 0.2 s then hops the internal topic
    twice. We expect: per key, outputs in input order and each input ends before the next
    begins; keys overlap (well under 20 x 3 x 0.2 s); the hops went through the internal
    topic, co-partitioned with the input."""
    trace: list[str] = []
    app = make_app(Ordered().add_resource("trace", trace))
    inputs = [(f"k{k}", i) for i in range(3) for k in range(20)]
    async with running(app):
        started = time.monotonic()
        await produce(broker.bootstrap, app.input_topic, inputs)
        async with Topic(broker.bootstrap, app.output_topic) as out:
            records = await out.wait_for(len(inputs), 60, "outputs")
        elapsed = time.monotonic() - started
        async with Topic(broker.bootstrap, app.internal_topic) as internal:
            hops = await internal.wait_for(len(inputs) * 3, 30, "internal events")
    assert elapsed < 8, f"took {elapsed:.1f} s: keys did not run concurrently"
    outputs = decoded(records)
    for k in range(20):
        key = f"k{k}"
        assert [v for kk, v, _ in outputs if kk == key] == [0, 1, 2]
        steps = [t for t in trace if t.split()[1] == key]
        assert steps == [f"{w} {key} {i}" for i in range(3) for w in ("begin", "end")]
    by_key_partition = {(r.key, r.partition) for r in hops}
    assert len({k for k, _ in by_key_partition}) == len(by_key_partition), (
        "a key's internal events went to several partitions"
    )
    assert all(HEADER_EVENT_ID in dict(h) for _, _, h in outputs)


class Breaking(Agent):
    @action(InputEvent)
    def run(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "boom":
            raise ValueError("exploded on purpose")
        ctx.send_event(OutputEvent(output=event.input))


async def test_bad_records_and_failing_actions_go_to_the_dead_letter_topic(
    broker: Broker, make_app: AppFactory, tmp_path: Path
) -> None:
    from agentstream.observability.eventlog import EventLoggerConfig, read_event_log
    from agentstream.service.worker import DeadLettered

    log_path = tmp_path / "events.jsonl"
    app = make_app(Breaking())
    app.event_log = EventLoggerConfig(path=str(log_path), flush="always")
    async with running(app, web=True) as worker:
        await produce(
            broker.bootstrap,
            app.input_topic,
            [
                (
                    "a",
                    b"{not json",
                )
            ],
            raw=True,
        )
        await produce(
            broker.bootstrap, app.input_topic, [("b", "boom"), ("b", "after"), ("c", "fine")]
        )
        async with Topic(broker.bootstrap, app.output_topic) as out:
            outputs = decoded(await out.wait_for(2, 30, "outputs of the good records"))
        async with Topic(broker.bootstrap, app.dead_letter_topic) as dlq:
            dead = await dlq.wait_for(2, 30, "dead letters")
        assert (
            worker.metrics.registry.get_sample_value(
                "agentstream_dead_letters_total", {"reason": "decode"}
            )
            == 1
        )
        assert (
            worker.metrics.registry.get_sample_value(
                "agentstream_dead_letters_total", {"reason": "action"}
            )
            == 1
        )
    assert sorted((k, v) for k, v, _ in outputs) == [("b", "after"), ("c", "fine")]
    logged = [r for r in read_event_log(log_path) if isinstance(r.event, DeadLettered)]
    assert sorted((r.key, r.event.reason, r.action) for r in logged) == [
        ("a", "decode", None),
        ("b", "action", "run"),
    ]
    by_reason = {dict(r.headers)["agentstream-reason"].decode(): r for r in dead}
    bad = by_reason["decode"]
    assert bad.key == b"a" and bad.value == b"{not json"
    assert b"JSONDecodeError" in dict(bad.headers)["agentstream-error-type"]
    failed = by_reason["action"]
    headers = {k: v.decode() for k, v in failed.headers}
    assert failed.key == b"b" and json.loads(failed.value) == "boom"
    assert headers["agentstream-error-type"] == "builtins.ValueError"
    assert headers["agentstream-error-message"] == "exploded on purpose"
    assert headers["agentstream-action"] == "run"
    # Where the user's code failed: file:line of the raise, and the whole traceback.
    path, line = headers["agentstream-error-location"].rsplit(":", 1)
    assert Path(path).resolve() == Path(__file__).resolve()
    assert "raise ValueError" in Path(path).read_text().splitlines()[int(line) - 1]
    assert "exploded on purpose" in headers["agentstream-error-traceback"]
    assert "test_service.py" in headers["agentstream-error-traceback"]
    assert headers["agentstream-event-id"].startswith(  # then the timestamp and a digest
        f"{app.input_topic}/{failed.partition}/" + headers["agentstream-source-offset"] + "/"
    )


class Remember(Agent):
    @action(InputEvent)
    def run(event: InputEvent, ctx: RunnerContext) -> None:
        n = (ctx.short_term_memory.get("n") or 0) + 1
        ctx.short_term_memory.set("n", n)
        ctx.send_event(OutputEvent(output=n))


async def test_state_is_pruned_and_stays_bounded(broker: Broker, make_app: AppFactory) -> None:
    """Scenario: 30 keys receive 20 rounds of inputs. We expect: after every round, the
    action-state entries are pruned to (near) zero and key records stay one per key."""
    app = make_app(Remember())
    keys = [f"k{i}" for i in range(30)]
    sizes = []
    async with running(app) as worker:
        store = worker.store

        def counts() -> tuple[int, int]:
            parts = store.assigned()
            return (
                sum(store.count(p, b"a") for p in parts),
                sum(store.count(p, b"k") for p in parts),
            )

        async with Topic(broker.bootstrap, app.output_topic) as out:
            for round_ in range(1, 21):
                await produce(broker.bootstrap, app.input_topic, [(k, round_) for k in keys])
                await out.wait_for(len(keys) * round_, 30, f"outputs of round {round_}")
                await wait_until(lambda: counts()[0] == 0, 10, "action state to be pruned")
                sizes.append(counts())
        outputs = decoded(out.records)
    assert sizes == [(0, len(keys))] * 20
    assert sorted(v for k, v, _ in outputs if k == "k0") == list(range(1, 21))


class Stalling(Agent):
    @action(InputEvent)
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "slow":
            while not ctx.get_resource("release").is_set():
                await asyncio.sleep(0.01)
        ctx.send_event(OutputEvent(output=event.input))


async def test_watermark_held_back_by_in_flight_input(broker: Broker, make_app: AppFactory) -> None:
    """Scenario: one partition; inputs with timestamps t0..t4, the one at t1 stalls.
    We expect: the watermark stays at t0 while t1 is in flight, however many later inputs
    finish, then jumps to t4; each output carries the watermark header."""
    release = asyncio.Event()
    app = make_app(Stalling().add_resource("release", release), partitions=1)
    async with running(app, web=True) as worker:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        values = ["a", "slow", "c", "d", "e"]
        for i, value in enumerate(values):
            await producer.send_and_wait(
                app.input_topic,
                json.dumps(value).encode(),
                key=value.encode(),
                timestamp_ms=1000 + i,
            )
        await producer.stop()
        gauge = worker.metrics.registry.get_sample_value
        async with Topic(broker.bootstrap, app.output_topic) as out:
            await out.wait_for(4, 30, "outputs of the fast inputs")
            await wait_until(
                lambda: gauge("agentstream_watermark_ms", {"partition": "0"}) == 1000,
                10,
                "watermark at the first input",
            )
            release.set()
            records = await out.wait_for(5, 30, "the stalled output")
            await wait_until(
                lambda: gauge("agentstream_watermark_ms", {"partition": "0"}) == 1004,
                10,
                "watermark to pass the stalled input",
            )
    marks = {r.value: int(dict(r.headers)[HEADER_WATERMARK]) for r in records}
    assert all(m <= 1000 for v, m in marks.items() if v != b'"slow"')
    assert {r.timestamp for r in records} == {1000, 1001, 1002, 1003, 1004}


async def test_metrics_and_health_endpoints(broker: Broker, make_app: AppFactory) -> None:
    app = make_app(Remember())
    worker = Worker(app)
    port = free_port()
    server = WebServer(worker, "127.0.0.1", port)
    await server.start()

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        status, _ = await asyncio.to_thread(get, "/health")
        assert status == 503, "ready before recovery"
        status, _ = await asyncio.to_thread(get, "/live")
        assert status == 200, "a starting worker is alive"
        await worker.start()
        await asyncio.wait_for(worker.ready.wait(), 30)
        await produce(broker.bootstrap, app.input_topic, [("k", 1)])
        async with Topic(broker.bootstrap, app.output_topic) as out:
            await out.wait_for(1, 30, "output")
        status, body = await asyncio.to_thread(get, "/health")
        assert status == 200 and json.loads(body)["status"] == "ready"

        async def lag_reported() -> bool:
            _, text = await asyncio.to_thread(get, "/metrics")
            return "agentstream_consumer_lag{" in text

        await wait_until(lag_reported, 10, "consumer lag in /metrics")
        _, text = await asyncio.to_thread(get, "/metrics")
        assert 'agentstream_actions_executed_total{action="run"} 1.0' in text
    finally:
        await worker.stop()
        await server.stop()


async def test_records_waiting_before_the_worker_starts_are_all_processed(
    broker: Broker, make_app: AppFactory
) -> None:
    """Scenario: 3,000 records over 300 keys are in the input topic before any worker runs
    (the fetcher may run ahead of partition recovery). We expect: every one is processed,
    in order per key."""
    from agentstream.service.broker import ensure_topics

    app = make_app(Remember())
    await ensure_topics(broker.bootstrap, app.topics())
    inputs = [(f"k{i % 300}", i) for i in range(3000)]
    await produce(broker.bootstrap, app.input_topic, inputs)
    async with running(app), Topic(broker.bootstrap, app.output_topic) as out:
        records = await out.wait_for(len(inputs), 60, "outputs")
    outputs = decoded(records)
    assert len(outputs) == len(inputs)
    assert [v for k, v, _ in outputs if k == "k7"] == list(range(1, 11))


async def test_backpressure_pauses_input_but_not_the_internal_topic(
    broker: Broker, make_app: AppFactory
) -> None:
    """Scenario: a backlog of 400 inputs over 200 keys, at most 2 keys at once and at most
    20 inputs taken at a time; every input hops the internal topic twice.
    We expect: all outputs, in order per key; the buffer never holds far more than 20
    inputs (one fetch may overshoot by its size); no deadlock on the internal topic."""
    from agentstream.service.broker import ensure_topics

    trace: list[str] = []
    app = make_app(
        Ordered().add_resource("trace", trace), max_concurrency=8, max_buffered_inputs=20
    )
    await ensure_topics(broker.bootstrap, app.topics())
    inputs = [(f"k{i % 200}", i) for i in range(400)]
    await produce(broker.bootstrap, app.input_topic, inputs)
    peak = 0
    async with running(app) as worker, Topic(broker.bootstrap, app.output_topic) as out:

        async def done() -> bool:
            nonlocal peak
            peak = max(peak, worker.operator.inputs_in_flight)
            return len(await out.poll()) >= len(inputs)

        await wait_until(done, 90, "every output under backpressure", interval=0.01)
    outputs = decoded(out.records)
    assert [v for k, v, _ in outputs if k == "k3"] == [3, 203]
    assert peak <= 20 + 100, f"{peak} inputs buffered"


class Patient(Agent):
    """Each input awaits a 3 s call (none for the input "quick"), then outputs its value."""

    @action(InputEvent)
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        await asyncio.sleep(0 if event.input == "quick" else 3)
        ctx.send_event(OutputEvent(output=event.input))


async def test_a_partition_is_not_starved_by_the_backlogs_of_another(
    broker: Broker, make_app: AppFactory
) -> None:
    """Scenario: before the worker starts, partition 0 holds 2 keys with 300 inputs each
    (each awaits a 3 s call), more than the 400 inputs the worker buffers; partition 1
    holds one quick input.
    We expect: partition 1 is read at once, not once partition 0's first calls end and
    make room: its output comes before any of partition 0's."""
    from agentstream.service.broker import ensure_topics
    from agentstream.service.layout import partition_for

    app = make_app(Patient(), partitions=2, max_concurrency=16, max_buffered_inputs=400)
    await ensure_topics(broker.bootstrap, app.topics())
    keys = [f"k{i}" for i in range(100)]
    busy = [k for k in keys if partition_for(k.encode(), 2) == 0][:2]
    quiet = next(k for k in keys if partition_for(k.encode(), 2) == 1)
    await produce(broker.bootstrap, app.input_topic, [(k, i) for i in range(300) for k in busy])
    await produce(broker.bootstrap, app.input_topic, [(quiet, "quick")])
    async with running(app), Topic(broker.bootstrap, app.output_topic) as out:

        async def answered() -> bool:
            return any(r.key == quiet.encode() for r in await out.poll())

        await wait_until(answered, 15, "the output of partition 1's key")
    assert [r.key for r in out.records] == [quiet.encode()], "partition 0's calls ended first"


async def test_hot_key_with_a_long_backlog(broker: Broker, make_app: AppFactory) -> None:
    """Scenario: 1,500 inputs of one key wait in the topic (a long pending queue).
    We expect: all processed in order; the key's record is not re-encoded per arrival
    (which made this quadratic)."""
    from agentstream.service.broker import ensure_topics

    app = make_app(Remember())
    await ensure_topics(broker.bootstrap, app.topics())
    await produce(broker.bootstrap, app.input_topic, [("hot", i) for i in range(1500)])
    async with running(app), Topic(broker.bootstrap, app.output_topic) as out:
        records = await out.wait_for(1500, 90, "outputs of the hot key")
    assert [v for _, v, _ in decoded(records)] == list(range(1, 1501))


async def test_error_policy_fail_stops_the_worker_with_the_error_logged_once(
    broker: Broker, make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Scenario: error_policy=fail and an action that raises on its input.
    We expect: the worker stops with the ActionExecutionError (its cause the user's
    exception), nothing is dead-lettered, and the user's traceback is logged exactly once."""
    from agentstream import ActionExecutionError

    app = make_app(Breaking(), error_policy="fail")
    worker = Worker(app)
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        await produce(broker.bootstrap, app.input_topic, [("b", "boom")])
        await wait_until(lambda: worker.stopped.is_set(), 60, "the worker to stop")
    finally:
        await worker.stop()
    assert isinstance(worker.error, ActionExecutionError)
    assert isinstance(worker.error.__cause__, ValueError)
    assert worker.metrics.registry.get_sample_value("agentstream_dead_letters_total") is None

    def shows_the_users_error(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is not None and "exploded on purpose" in f"{exc} {exc.__cause__}"

    logged = [r for r in caplog.records if shows_the_users_error(r)]
    assert len(logged) == 1, [r.getMessage() for r in logged]
