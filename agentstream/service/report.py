"""What a worker reports about itself: lag metrics, owned partitions, recovery and
migration progress, its address and the broker's reachability (``/health``, ``/keys``,
``/metrics``). A part of :class:`~agentstream.service.worker.Worker` (its base class)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from agentstream.observability.metrics import RuntimeMetrics
from agentstream.service.app import AgentApp
from agentstream.service.migration import Migration
from agentstream.service.output import KafkaOutput
from agentstream.service.settings import Settings
from agentstream.service.watch import BrokerWatch
from agentstream.state.changelog import ChangelogStore

__all__ = ["WorkerReport"]

log = logging.getLogger(__name__)


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
    _read_from: dict[TopicPartition, int]
    _assigned: set[int]

    async def _lag_loop(self) -> None:
        """The consumer lag, every second; every 0.1 s while a partition's position is
        not known (backpressure keeps room for such a partition)."""
        assert self._consumer is not None
        while not self.stopped.is_set():
            known = await self._report_lag()
            await asyncio.sleep(1.0 if known else 0.1)

    async def _report_lag(self) -> bool:
        """Set the lag of the assigned partitions; whether all their positions are known."""
        assert self._consumer is not None
        assigned = list(self._consumer.assignment())
        known = bool(assigned)
        for tp in assigned:
            position = self.position(tp)
            if position is None:
                position = await self._read_from_of(tp)
            highwater = self._consumer.highwater(tp)
            if position is None or highwater is None:
                known = known and position is not None
                continue
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                max(highwater - position, 0)
            )
        return known

    def position(self, tp: TopicPartition) -> int | None:
        """The offset of the next record of ``tp`` to process (None: not known yet)."""
        position = self._positions.get(tp)
        return self._read_from.get(tp) if position is None else position

    async def _read_from_of(self, tp: TopicPartition) -> int | None:
        """Where the consumer reads ``tp`` from, for a partition none of whose records were
        processed yet (an idle one has no lag): for the lag, and for backpressure (which
        keeps a share of the buffer for partitions with records to read). Never the
        committed offsets' source: that is what was processed, ``_positions``."""
        assert self._consumer is not None
        try:
            position = await asyncio.wait_for(self._consumer.position(tp), 1.0)
        except (IllegalStateError, TimeoutError):
            return None  # revoked meanwhile, or still being reset
        except Exception as exc:  # the group's error: the rebalance that follows deals with it
            log.debug("position of %s not known yet: %r", tp, exc)
            return None
        if tp in self._consumer.assignment() and tp not in self._positions:
            self._read_from[tp] = position
        return position

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
