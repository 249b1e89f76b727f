"""A worker's commits and the partitions it owns: commit loop, transactions, rebalances.

:class:`PartitionDuties` is a part of :class:`~agentstream.service.worker.Worker` (its
base class), apart from the consuming and the lifecycle::

    commit loop: positions snapshot ─► store.flush() ─► commit offsets ─► prune action
                 state of the inputs finished before the snapshot
                 (exactly_once: each partition's transaction commits instead, with its
                 outputs, routed events, key state and offsets)
    revoke: runners of the partitions cancelled, state flushed, offsets committed,
            producers, state and positions of the partitions let go
    assign: transactional producers started (fencing a zombie), state recovered from
            the changelog, every key with an input in flight resumed
    a failed transaction: the partition is reset (recovered, read again from its
            committed offsets); if fenced, the worker waits for the rebalance
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError, ProducerFenced

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.operator import Operator
from agentstream.service.app import AgentApp
from agentstream.service.broker import client_settings
from agentstream.service.kafka_errors import kafka_errors
from agentstream.service.migration import Migration
from agentstream.service.output import PRODUCER_BATCH_BYTES
from agentstream.service.settings import Settings
from agentstream.service.tables import ChangelogActionStateStore, ChangelogKeyState
from agentstream.service.transactions import Transactions
from agentstream.service.watch import BrokerWatch
from agentstream.state.changelog import ChangelogStore

__all__ = ["PartitionDuties", "PartitionListener"]

log = logging.getLogger("agentstream.service.worker")

# How long a worker whose partition transaction was fenced waits for the rebalance that
# moves the partition away (longer than a session) before it takes the partition back.
_FENCED_WAIT_S = 30.0


def _fenced(error: BaseException | None) -> bool:
    """Whether ``error`` (or its cause) says another producer took the transactional id."""
    while error is not None:
        if isinstance(error, ProducerFenced):
            return True
        error = error.__cause__
    return False


class PartitionListener(ConsumerRebalanceListener):
    """Hands the consumer's rebalance callbacks to the worker."""

    def __init__(self, worker: PartitionDuties):
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._worker._on_assigned(assigned)


class PartitionDuties:
    """Commits and rebalances; the worker supplies the state below and ``_fail``."""

    app: AgentApp
    settings: Settings
    metrics: RuntimeMetrics
    ready: asyncio.Event
    stopped: asyncio.Event
    _exactly_once: bool
    _transactions: Transactions | None
    _to_reset: dict[int, BaseException]
    _fenced: dict[int, float]
    _bootstrap: str
    _client: dict[str, object]
    _producer: AIOKafkaProducer | None
    _consumer: AIOKafkaConsumer | None
    _store: ChangelogStore | None
    _operator: Operator | None
    _broker_watch: BrokerWatch | None
    _positions: dict[TopicPartition, int]
    _read_from: dict[TopicPartition, int]
    _assigned: set[int]
    _paused: set[TopicPartition]
    _key_state: ChangelogKeyState | None
    _action_states: ChangelogActionStateStore | None
    _migration: Migration

    @property
    def operator(self) -> Operator:
        assert self._operator is not None, "worker not started"
        return self._operator

    @property
    def store(self) -> ChangelogStore:
        assert self._store is not None, "worker not started"
        return self._store

    def _fail(self, error: BaseException) -> None:
        raise NotImplementedError

    async def _commit(self) -> None:
        if self._exactly_once:
            await self._commit_transactions()
            return
        assert self._consumer is not None and self._producer is not None
        positions = self._migration.pinned(self._positions)
        finished = self.operator.finished_count
        await self.store.flush()
        await self._producer.flush()
        offsets = {
            tp: offset for tp, offset in positions.items() if tp in self._consumer.assignment()
        }
        if offsets:
            with kafka_errors("commit offsets"):
                await self._consumer.commit(offsets)
        self.operator.prune(finished)

    async def _commit_transactions(self) -> None:
        """Commit every owned partition's transaction (exactly-once); reset the failed."""
        assert self._transactions is not None
        finished = 0

        def snapshot() -> None:  # the inputs finished as of the transactions' snapshot
            nonlocal finished
            finished = self.operator.finished_count

        failed = await self._transactions.commit(
            self.store, lambda: self._migration.pinned(self._positions), snapshot
        )
        if not failed:
            self.operator.prune(finished)
            return
        # Their state is the committed changelog again; their action state stays.
        self.operator.forget_finished(lambda slot: slot[0] in failed)  # type: ignore[index]
        for p, error in sorted(failed.items()):
            log.warning("the transaction of partition %d failed (%r): resetting it", p, error)
        self._assigned -= failed.keys()
        await self.operator.cancel(lambda record: record.partition in failed)
        self._to_reset.update(failed)

    def _transactional_producer(self, txn_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=1,
            max_request_size=8 * 1024 * 1024,
            max_batch_size=PRODUCER_BATCH_BYTES,
            **client_settings(self.settings.embedded_broker, self._client, kind="producer"),
            transactional_id=txn_id,
            # Right after a commit the coordinator answers the next transaction's first
            # AddPartitionsToTxn with CONCURRENT_TRANSACTIONS until its markers are
            # written; aiokafka retries after this backoff (100 ms by default), which
            # every output of the new transaction would wait for.
            retry_backoff_ms=20,
        )

    async def _reset(self) -> None:
        """Partitions whose transaction failed: discard their uncommitted state; those still
        assigned to us are recovered and read again from their committed offsets."""
        assert self._consumer is not None
        failures, self._to_reset = self._to_reset, {}
        await self._forget(set(failures), abort=True)
        now = time.monotonic()
        for p, error in failures.items():
            if _fenced(error):  # a new owner: the group is rebalancing without us
                self._fenced[p] = now + _FENCED_WAIT_S
                log.info("partition %d fenced by a new owner; waiting for the rebalance", p)
        due = {p for p, deadline in self._fenced.items() if deadline <= now}
        for p in due:
            del self._fenced[p]
        parts = (set(failures) - set(self._fenced)) | due
        assignment = self._consumer.assignment()
        self._consumer.pause(*[tp for tp in assignment if tp.partition in self._fenced])
        owned = [tp for tp in assignment if tp.partition in parts]
        self._consumer.resume(*owned)
        for tp in owned:
            with kafka_errors("read the committed offsets"):
                committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        if owned:
            await self._on_assigned(owned)

    async def _forget(self, parts: set[int], abort: bool) -> None:
        """Let go of ``parts`` locally: their producers, state and positions."""
        self._assigned -= parts  # first: nothing reads or writes their state from now on
        await self.operator.cancel(lambda record: record.partition in parts)
        if self._exactly_once:
            self.operator.forget_finished(lambda slot: slot[0] in parts)  # type: ignore[index]
            self.store.drop_held(parts)
            assert self._transactions is not None
            await self._transactions.stop(parts, abort)
        await self.store.revoke(parts)
        for p in parts:
            self.operator.event_time.forget(p)
        assert self._key_state is not None
        self._key_state.forget(parts)
        assert self._action_states is not None
        self._action_states.forget(parts)
        self._migration.forget(parts)
        self._positions = {tp: o for tp, o in self._positions.items() if tp.partition not in parts}
        self._read_from = {tp: o for tp, o in self._read_from.items() if tp.partition not in parts}

    async def _commit_loop(self) -> None:
        while not self.stopped.is_set():
            await asyncio.sleep(self.settings.commit_interval_s)
            try:
                await self._commit()
            except (KafkaError, BrokerError) as exc:  # a rebalance and the like: try again
                log.info("commit deferred: %s", exc)

    def _partitions_added(self, beyond: list[int]) -> ConfigurationError:
        """The input topic grew under a running app: refuse, loudly, rather than let keys
        move away from their memory and order."""
        n = self.settings.partitions
        error = ConfigurationError(
            f"the input topic {self.app.input_topic!r} now has partitions {beyond} beyond the "
            f"app's {n} (its internal events and state changelog topics have {n}): the keys "
            f"that moved would lose their memory and order, so this worker stops instead. "
            f"The embedded development broker cannot add partitions; on Kafka, the workers "
            f"move the keys (see 'More partitions' in docs/operations.md)"
        )
        log.error("%s", error)
        return error

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in revoked if tp.topic == self.app.input_topic}
        self.ready.clear()
        if not parts or self._operator is None:
            return
        # First: the consuming, which may be waiting on the broker mid-record (a migration
        # forwarding a record), takes no more of their records from now on.
        self._assigned -= parts
        await self.operator.cancel(lambda record: record.partition in parts)
        with contextlib.suppress(KafkaError, BrokerError):
            await self._commit()
        for p in parts:
            self._to_reset.pop(p, None)
            self._fenced.pop(p, None)
        await self._forget(parts, abort=True)

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.app.input_topic}
        if self.settings.embedded_broker:  # no CreatePartitions: the count never grows
            beyond = sorted(p for p in parts if p >= self.settings.partitions)
            if beyond:
                self._fail(self._partitions_added(beyond))
                return
        else:
            planned = await self._migration.plan(parts)
            if planned is None:  # a migration begins: the rebalance that follows assigns
                assert self._consumer is not None
                self._consumer.pause(*assigned)
                return
            later = [tp for tp in assigned if tp.partition not in planned]
            if later:  # beyond a migration under way: they wait for the next one
                assert self._consumer is not None
                self._consumer.pause(*later)
            assigned = [tp for tp in assigned if tp.partition in planned]
            parts = planned
        internal = {tp.partition for tp in assigned if tp.topic == self.app.internal_topic}
        if parts != internal:
            log.error(
                "input partitions %s and internal partitions %s are not co-assigned",
                sorted(parts),
                sorted(internal),
            )
        if self._exactly_once:
            for p in parts:  # a failure of an earlier ownership is no concern of this one
                self._fenced.pop(p, None)
                self._to_reset.pop(p, None)
            assert self._transactions is not None
            await self._transactions.start(parts)
        await self.store.assign(parts)
        self._assigned |= parts
        self._paused = set()  # a new assignment starts unpaused
        assert self._key_state is not None
        assert self._action_states is not None
        self._migration.assigned(parts)
        resumed = collected = 0
        for p in sorted(parts):
            slots = [s for s in self._key_state.keys_of(p) if self._migration.resumable(s)]
            resumed += self.operator.resume(slots)
            collected += self._action_states.collect_garbage(p, self._key_state)
        if collected:
            log.info("dropped the action state of %d inputs finished before a crash", collected)
        log.info("assigned partitions %s; resumed %d keys in flight", sorted(parts), resumed)
        self.ready.set()
