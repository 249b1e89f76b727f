"""The event log of a worker, turned on from the environment (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

from agentstream.service.client import Connection, OutRecord, produce
from tests.brokers import Broker
from tests.harness import WorkerProcess, wait_until


async def test_worker_event_log_from_the_environment_survives_sigkill(
    broker: Broker, tmp_path: Path
) -> None:
    """Scenario: a worker started with AGENTSTREAM_EVENT_LOG processes two inputs, then
    sits idle and is SIGKILLed. We expect: the lines of both inputs (input, sent event,
    output) reach the file while the worker is idle, within the flush interval, and are
    all there after the kill."""
    log_path = tmp_path / "events.jsonl"
    worker = WorkerProcess(
        "examples.greeter:app",
        broker.url,
        tmp_path / "data",
        {"AGENTSTREAM_EVENT_LOG": str(log_path), "AGENTSTREAM_PARTITIONS": "1"},
        tmp_path / "worker.log",
        embedded=broker.embedded,
    ).start()
    try:
        await worker.ready(60)
        conn = Connection(broker.bootstrap, {}, broker.embedded)
        await produce(conn, "greeter-in", [OutRecord(k, b'"x"') for k in ("a", "b")])

        def outputs_logged() -> bool:
            if not log_path.exists():
                return False
            lines = [json.loads(line) for line in log_path.read_text().splitlines()]
            return sum(line["event_type"].endswith("OutputEvent") for line in lines) == 2

        await wait_until(outputs_logged, 30, "both outputs in the event log of an idle worker")
        worker.kill()
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        by_key = {
            key: [line["event_type"].rsplit(".", 1)[-1] for line in lines if line["key"] == key]
            for key in ("a", "b")
        }
        assert by_key == {k: ["InputEvent", "Greeting", "OutputEvent"] for k in ("a", "b")}, by_key
    finally:
        worker.stop()
