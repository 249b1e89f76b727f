"""Client-side helpers behind ``agentstream send``, ``tail`` and ``demo``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentstream.service.app import AgentApp
from agentstream.service.broker import client_settings, ensure_topics
from agentstream.service.codecs import codec_for, decode_key, encode_key

__all__ = ["follow", "run_demo", "send_records"]

log = logging.getLogger(__name__)


async def send_records(app: AgentApp, records: Iterable[tuple[Any, bytes, int | None]]) -> None:
    """Produce (key, encoded value, timestamp ms) records to the app's input topic."""
    s = app.settings
    bootstrap = ",".join(s.bootstrap_servers)
    await ensure_topics(
        bootstrap,
        app.topics(),
        replication_factor=s.replication_factor,
        client_kwargs=s.client_kwargs(),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **client_settings(s.embedded_broker, s.client_kwargs(), kind="producer"),
    )
    await producer.start()
    try:
        for key, value, timestamp in records:
            await producer.send(
                app.input_topic, value=value, key=encode_key(key), timestamp_ms=timestamp
            )
        await producer.flush()
    finally:
        await producer.stop()


async def follow(
    app: AgentApp,
    show: Callable[[dict[str, Any]], None],
    *,
    topic: str | None = None,
    from_beginning: bool = True,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
) -> int:
    """Print records of the output topic (or ``topic``); returns how many were shown."""
    s = app.settings
    codec = codec_for(s.output_codec)
    consumer = AIOKafkaConsumer(
        topic or app.output_topic,
        bootstrap_servers=",".join(s.bootstrap_servers),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **s.client_kwargs(),
    )
    await consumer.start()
    shown = 0
    last = time.monotonic()
    try:
        while max_records is None or shown < max_records:
            batch = await consumer.getmany(timeout_ms=200)
            if not batch:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    break
                continue
            last = time.monotonic()
            for messages in batch.values():
                for m in messages:
                    try:
                        value: Any = codec.decode(m.value) if m.value is not None else None
                    except Exception:
                        value = repr(m.value)
                    show(
                        {
                            "key": decode_key(m.key),
                            "value": value,
                            "timestamp": m.timestamp,
                            "headers": {k: v.decode(errors="replace") for k, v in m.headers},
                        }
                    )
                    shown += 1
    finally:
        await consumer.stop()
    return shown


SAMPLES = [("ann", "ann"), ("bob", "bob"), ("ann", "ann again"), ("cy", "cy")]


async def run_demo(app: AgentApp, data_dir: Path | None) -> None:
    """Start the embedded broker and a worker, feed sample records, print the outputs."""
    from agentstream.service.broker import EmbeddedBroker
    from agentstream.service.worker import Worker

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
                app, [(k, codec.encode(v), now + i) for i, (k, v) in enumerate(SAMPLES)]
            )
            print(f"sent {len(SAMPLES)} records to {app.input_topic}: {SAMPLES}")
            print(f"outputs on {app.output_topic}:")
            count = await asyncio.wait_for(
                follow(
                    app,
                    lambda r: print(f"  {r['key']} -> {r['value']}"),
                    max_records=len(SAMPLES),
                    idle_timeout_s=20,
                ),
                60,
            )
            print(f"{count} outputs")
        finally:
            await worker.stop()
