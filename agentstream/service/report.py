"""What a worker reports about itself: lag metrics, owned partitions, recovery and
migration progress, its address and the broker's reachability (``/health``, ``/keys``,
``/metrics``). A part of :class:`~agentstream.service.worker.Worker` (its base class)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.observability.metrics import RuntimeMetrics
from agentstream.service.app import AgentApp
from agentstream.service.migration import Migration
from agentstream.service.output import KafkaOutput
from agentstream.service.settings import Settings
from agentstream.service.watch import BrokerWatch
from agentstream.state.changelog import ChangelogStore

__all__ = ["WorkerReport"]


class WorkerReport:
    """The worker's reports; the worker supplies the state below."""

    app: AgentApp
    settings: Settings
    metrics: RuntimeMetrics
    stopped: asyncio.Event
    _consumer: AIOKafkaConsumer | None
    _store: ChangelogStore | None
    _output: KafkaOutput | None
    _broker_watch: BrokerWatch | None
    _migration: Migration
    _positions: dict[TopicPartition, int]
    _assigned: set[int]

    async def _lag_loop(self) -> None:
        assert self._consumer is not None
        while not self.stopped.is_set():
            await asyncio.sleep(1.0)
            for tp in list(self._consumer.assignment()):
                highwater = self._consumer.highwater(tp)
                if highwater is None:
                    continue
                position = self._positions.get(tp, 0)
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(highwater - position, 0)
                )

    @property
    def assigned_partitions(self) -> frozenset[int]:
        """The input partitions this worker owns (their state is recovered)."""
        return frozenset(self._assigned)

    def input_partitions(self) -> int:
        """How many partitions the input topic has (0 until known)."""
        if self._consumer is None:
            return 0
        return len(self._consumer.partitions_for_topic(self.app.input_topic) or ())

    def recovery_progress(self) -> list[dict[str, Any]]:
        """The partitions being recovered: records read, to read, and the rate."""
        if self._store is None:
            return []
        return [
            {"partition": p.partition, "read": p.read, "to_read": p.to_read, "rate": round(p.rate)}
            for p in self._store.recovering()
        ]

    @property
    def output(self) -> KafkaOutput:
        assert self._output is not None, "worker not started"
        return self._output

    def migration_progress(self) -> dict[str, Any] | None:
        """A migration under way (for /health): partitions and keys moved, to move."""
        return self._migration.progress()

    @property
    def web_address(self) -> str:
        """This worker's web address, as configured."""
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def broker_unreachable(self) -> str | None:
        """Why the broker counts as unreachable (past the grace period), or None."""
        return None if self._broker_watch is None else self._broker_watch.unreachable()
