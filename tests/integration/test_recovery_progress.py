"""Recovery says how far it is: in the log every 5 s and in /health's 503 body (issue 16)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agentstream.service.broker import free_port
from agentstream.service.web import WebServer
from agentstream.service.worker import Worker
from agentstream.state import recovery
from agentstream.state.changelog import ChangelogStore
from agentstream.state.recovery import RecoveryProgress
from tests.brokers import Broker


async def test_recovery_logs_records_read_to_read_and_rate(
    broker: Broker,
    tmp_path: Path,
    topic_factory: Callable[..., Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario: a partition's changelog holds 300 records; a store recovers it, its
    progress reported at every fetch (the 5 s interval shortened to 0, a few records per
    fetch). We expect: log
    lines naming the partition, records read of the total and a rate; and nothing left
    under way once the recovery is done."""
    topic = await topic_factory(1, "changelog")
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for n in range(300):
            await producer.send(topic, key=b"k%d" % n, value=b"v", partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    monkeypatch.setattr(recovery, "_PROGRESS_LOG_S", 0.0)
    caplog.set_level(logging.INFO, logger="agentstream.state.recovery")
    store = ChangelogStore(
        data_dir=tmp_path / "s", changelog_topic=topic, bootstrap=broker.bootstrap
    )
    await store.start()
    try:
        await asyncio.wait_for(store.assign([0]), 60)
        assert store.recovering() == []
        stats = store.last_recovery(0)
        assert stats is not None and stats.records == 300
    finally:
        await store.stop()
    lines = [r.getMessage() for r in caplog.records if "recovering partition 0" in r.getMessage()]
    assert lines, "no progress line was logged"
    assert any(" of 300 records read (" in line and "records/s)" in line for line in lines), lines


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_health_503_body_carries_the_recovery_progress() -> None:
    """Scenario: a worker still recovering two partitions. We expect: /health answers 503
    "recovering" with each partition's records read, to read and rate."""
    progress = [RecoveryProgress(0, 1200, 50_000, 9000.4), RecoveryProgress(3, 0, None, 0.0)]
    store = SimpleNamespace(recovering=lambda: progress)
    worker: Any = SimpleNamespace(
        error=None,
        ready=asyncio.Event(),
        recovery_progress=lambda: Worker.recovery_progress(SimpleNamespace(_store=store)),  # type: ignore[arg-type]
        migration_progress=lambda: None,
    )
    port = free_port()
    server = WebServer(worker, "127.0.0.1", port)
    await server.start()
    try:
        status, body = await asyncio.to_thread(_health, port)
    finally:
        await server.stop()
    assert status == 503 and body == {
        "status": "recovering",
        "partitions": [
            {"partition": 0, "read": 1200, "to_read": 50000, "rate": 9000},
            {"partition": 3, "read": 0, "to_read": None, "rate": 0},
        ],
        "migration": None,
    }
