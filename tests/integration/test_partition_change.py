"""A partition count raised under a running app is refused loudly, never silently (issue 13).

Moving keys' state to new partitions is not built yet; until it is, the worker must not let
keys drift away from their memory and order without a word.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.admin import NewPartitions

from agentstream import ConfigurationError
from agentstream.service.broker import admin_client, free_port
from agentstream.service.worker import Worker
from tests.brokers import Broker
from tests.harness import wait_until
from tests.integration.test_keys_and_health import _app


async def test_more_input_partitions_under_a_running_worker_stop_it_with_the_way_out(
    broker: Broker, tmp_path: Path
) -> None:
    """Scenario: a worker runs an app of 2 partitions; someone raises the input topic to 4
    (kafka-topics --alter). We expect: within 30 s of metadata refresh the worker stops with
    a ConfigurationError that names the topic, the new partitions, the app's count and where
    the procedure is documented; nothing is processed on the new partitions."""
    if broker.embedded:
        pytest.skip("the embedded broker cannot add partitions (no CreatePartitions)")
    app = _app(broker, tmp_path, f"grow-{free_port()}", partitions=2)
    worker = Worker(app)
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        async with admin_client(broker.bootstrap) as admin:
            await admin.create_partitions({app.input_topic: NewPartitions(total_count=4)})
        await wait_until(
            lambda: worker.error is not None, 60, "the worker to refuse the new partitions"
        )
    finally:
        await worker.stop()
    error = worker.error
    assert isinstance(error, ConfigurationError)
    text = str(error)
    assert app.input_topic in text and "[2, 3]" in text and "app's 2" in text
    assert "docs/operations.md" in text
