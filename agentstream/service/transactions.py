"""Exactly-once: one Kafka transaction per input partition and commit interval.

Design note::

    assign p ──► producer "<app>-<p>" (transactional): init_transactions fences a zombie
                 that still holds p and aborts its open transaction ──► begin
    while p is owned, everything p's inputs cause goes through p's producer:
        outputs of p's keys, routed events (internal p), dead letters ─► send()
    commit (every commit interval, all partitions at once, the worker's commit loop):
        close() every gate: no send of p starts; wait for those under way to be queued
        snapshot (no await in between): consumer positions, p's held key-state writes
        per partition: held writes ─► changelog[p] ─► send_offsets_to_transaction
                       (input p, internal p) ─► commit_transaction ─► begin ─► open()
    revoke p ──► last commit ──► stop the producer (a failed commit: abort, discard)

Why a producer per partition: aiokafka's ``send_offsets_to_transaction`` sends
TxnOffsetCommit v0, which carries the group id only (no KIP-447 generation or member id),
so the group cannot fence a zombie; its transactional id can, when the partition's new
owner initialises the same id (as Faust and Kafka Streams' eos-v1 do).

Action state and durable call results are not in the transaction: they are produced at
once by the worker's idempotent producer (the store keys :func:`held` refuses), so even an aborted
transaction never makes a completed LLM or tool call run again.

An input whose outputs were committed in one transaction but which finished in a later
one (that aborted) is resumed, and its completed actions replay and re-send their outputs;
:class:`EmittedOutputs` remembers, in the same transaction as the outputs, which outputs
of each key's current input were sent, and those are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaProducer, TopicPartition

from agentstream.errors import BrokerError
from agentstream.serde import dumps, loads
from agentstream.service.kafka_errors import kafka_errors
from agentstream.state.changelog import ChangelogStore

__all__ = [
    "EmittedOutputs",
    "PartitionLost",
    "PartitionTransaction",
    "Transactions",
    "held",
    "transactional_id",
]

log = logging.getLogger(__name__)

# Store key prefixes of action state (agentstream.service.tables: b"r" one action run,
# b"a" the version-1 layout): produced at once, outside any transaction.
_ACTION_STATE: Final = (b"r", b"a")
_EMITTED: Final = b"o"  # + record key (msgpack) -> [input id, [output event ids]]


class PartitionLost(BrokerError):
    """A send in a partition's transaction failed (typically: a new owner of the
    partition fenced this worker's producer). Nothing of the open transaction will
    commit; the worker resets the partition, so the send is not an error of the input
    (no dead letter): its committed state is read again, by whoever owns it now."""

    def __init__(self, partition: int, cause: BaseException):
        self.partition = partition
        super().__init__(f"the transaction of input partition {partition} failed: {cause!r}")


def held(store_key: bytes) -> bool:
    """Whether a store key's writes wait for the partition's transaction."""
    return store_key[:1] not in _ACTION_STATE


def transactional_id(app: str, partition: int) -> str:
    """The transactional id of the producer of input partition ``partition``."""
    return f"{app}-{partition}"


class PartitionTransaction:
    """The transactional producer of one input partition and its open transaction.

    Sends pass a gate that :meth:`close` shuts while the transaction commits, so that a
    send is either queued before the commit's snapshot (and in that transaction) or waits
    for the next one.
    """

    def __init__(self, partition: int, producer: AIOKafkaProducer):
        self.partition = partition
        self.producer = producer
        self._open = asyncio.Event()
        self._sending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.dirty = False  # something was sent in the open transaction
        self.failed: BaseException | None = None

    async def start(self) -> None:
        """Initialise the transactional id (fencing its previous holder) and begin."""
        await self.producer.start()
        await self.producer.begin_transaction()
        self._open.set()

    async def send(
        self, topic: str, after: Callable[[], None] | None = None, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Queue a record in the open transaction (waiting while it commits); returns the
        delivery future. ``after`` runs once the record is queued, still before any
        commit can take its snapshot (so a store write it makes is in the same
        transaction)."""
        while not self._open.is_set():
            await self._open.wait()
        if self.failed is not None:
            raise PartitionLost(self.partition, self.failed)
        self._sending += 1
        self._idle.clear()
        try:
            future: asyncio.Future[Any] = await self.producer.send(topic, **kwargs)
            self.dirty = True
            if after is not None:
                after()
            return future
        except Exception as exc:
            raise self.fail(exc) from exc
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()

    def fail(self, exc: BaseException) -> PartitionLost:
        """Mark the transaction failed (the worker resets the partition at its next
        commit); returns the error to raise."""
        if self.failed is None:
            self.failed = exc
        return PartitionLost(self.partition, exc)

    async def delivered(self, delivery: asyncio.Future[Any]) -> Any:
        """Wait for a record sent in this transaction to be acked."""
        try:
            return await delivery
        except Exception as exc:
            raise self.fail(exc) from exc

    async def close(self) -> None:
        """Shut the gate and wait until the sends under way are queued."""
        self._open.clear()
        await self._idle.wait()

    async def commit(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        """Commit the open transaction with the consumer ``offsets``; begin the next (the
        gate stays shut until :meth:`open`)."""
        if offsets:
            await self.producer.send_offsets_to_transaction(offsets, group_id)
        await self.producer.commit_transaction()
        self.dirty = False
        await self.producer.begin_transaction()

    def open(self) -> None:
        """Let sends through again."""
        self._open.set()

    async def stop(self, abort: bool) -> None:
        """Stop the producer; ``abort`` the open transaction first (its writes vanish)."""
        self.failed = self.failed or BrokerError(f"partition {self.partition} was revoked")
        self._open.set()  # waiting senders wake up and fail
        if abort:
            try:
                await asyncio.wait_for(self.producer.abort_transaction(), 10)
            except Exception as exc:  # fenced, or the broker is gone: its next owner aborts
                log.info("aborting the transaction of partition %d: %r", self.partition, exc)
        await self.producer.stop()


class Transactions:
    """The worker's partition transactions: started on assignment, committed together,
    stopped on revocation; called with a partition, returns its open transaction.

    Args:
        group_id: the consumer group whose offsets commit in the transactions.
        make_producer: makes the (not started) producer of a transactional id.
    """

    def __init__(self, group_id: str, make_producer: Callable[[str], AIOKafkaProducer]):
        self._group_id = group_id
        self._make_producer = make_producer
        self._txns: dict[int, PartitionTransaction] = {}
        self._committed: dict[TopicPartition, int] = {}  # offsets in the last transaction
        self._lock = asyncio.Lock()  # one commit at a time, never beside a stop

    def __call__(self, partition: int) -> PartitionTransaction:
        txn = self._txns.get(partition)
        if txn is None:
            raise BrokerError(f"input partition {partition} is not assigned to this worker")
        return txn

    async def start(self, partitions: Iterable[int]) -> None:
        """A transactional producer per partition: initialising its id fences the
        partition's previous owner and aborts its open transaction (so start it before
        the changelog is read)."""

        async def start(p: int) -> None:
            txn = PartitionTransaction(p, self._make_producer(transactional_id(self._group_id, p)))
            with kafka_errors(f"start the transactional producer of partition {p}"):
                await txn.start()
            self._txns[p] = txn

        await asyncio.gather(*(start(p) for p in sorted(set(partitions)) if p not in self._txns))

    async def stop(self, partitions: Iterable[int] | None, abort: bool) -> None:
        """Stop the producers of ``partitions`` (None: all); ``abort`` their open
        transactions if anything was sent in them (a failed one always is)."""
        async with self._lock:
            parts = set(self._txns) if partitions is None else set(partitions)
            for p in sorted(parts):
                txn = self._txns.pop(p, None)
                if txn is not None:
                    with contextlib.suppress(Exception):
                        await txn.stop(abort=(abort and txn.dirty) or txn.failed is not None)
            for tp in [tp for tp in self._committed if tp.partition in parts]:
                del self._committed[tp]

    async def commit(
        self,
        store: ChangelogStore,
        positions: Callable[[], Mapping[TopicPartition, int]],
        snapshot: Callable[[], None],
    ) -> dict[int, BaseException]:
        """Commit every partition's transaction: what was sent in it, its held key-state
        writes and its consumer positions (``positions()``, read at the snapshot).
        ``snapshot`` is called at the instant the
        positions and held writes are taken (for what else must be of that instant).

        Returns:
            The partitions whose transaction failed (their gates stay shut), and why.
        """
        async with self._lock:
            txns = dict(self._txns)
            failed: dict[int, BaseException] = {}
            if not txns:
                return failed
            await asyncio.gather(*(txn.close() for txn in txns.values()))
            # The snapshot: no await from here until every partition's is taken; every
            # send before it is queued in its transaction.
            snapshot()
            now = positions()
            plans = []
            for p, txn in txns.items():
                offsets = {
                    tp: offset
                    for tp, offset in now.items()
                    if tp.partition == p and self._committed.get(tp) != offset
                }
                entries = store.held(p)
                if txn.failed is not None:  # a send failed: it cannot commit
                    failed[p] = txn.failed
                elif entries or offsets or txn.dirty:
                    plans.append((p, txn, entries, offsets))

            async def commit(p: int, txn: PartitionTransaction, entries: Any, offsets: Any) -> None:
                async def end() -> None:
                    await txn.commit(offsets, self._group_id)

                with kafka_errors(f"commit the transaction of partition {p}"):
                    await store.commit_held(p, entries, txn.producer, end)
                self._committed.update(offsets)

            results = await asyncio.gather(
                *(commit(*plan) for plan in plans), return_exceptions=True
            )
            for (p, txn, _, _), result in zip(plans, results, strict=True):
                if isinstance(result, BaseException):
                    txn.fail(result)
                    failed[p] = result
            for txn in txns.values():
                if txn.failed is None:
                    txn.open()
            return failed


class EmittedOutputs:
    """Which outputs of each key's current input were sent, written in the store beside
    the key's state, so in the same transaction as the outputs themselves.

    One small record per key (``b"o"`` + record key): the input's id and the event ids
    of its outputs sent so far; a key's next input replaces it.
    """

    def __init__(self, store: ChangelogStore):
        self._store = store

    def _key(self, key: Hashable) -> bytes:
        return _EMITTED + dumps(key, what="record key")

    def sent(self, partition: int, key: Hashable, input_id: str, event_id: str) -> bool:
        """Whether the output ``event_id`` of input ``input_id`` was sent already."""
        raw = self._store.get(partition, self._key(key))
        if raw is None:
            return False
        recorded_input, ids = loads(raw)
        return bool(recorded_input == input_id and event_id in ids)

    def note(self, partition: int, key: Hashable, input_id: str, event_id: str) -> None:
        """Record that the output ``event_id`` of input ``input_id`` was sent."""
        store_key = self._key(key)
        raw = self._store.get(partition, store_key)
        ids: list[str] = []
        if raw is not None:
            recorded_input, recorded = loads(raw)
            if recorded_input == input_id:
                ids = list(recorded)
        ids.append(event_id)
        self._store.put(partition, store_key, dumps([input_id, ids]))
