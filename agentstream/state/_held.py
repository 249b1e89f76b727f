"""A changelog store's held writes: key state that waits for its Kafka transaction.

Under exactly-once the store is made with ``hold``: writes the predicate selects are held
per partition until the partition's transaction produces and commits them
(:meth:`HeldWrites.commit_held`); only then do they reach RocksDB, so an aborted
transaction leaves no trace. :class:`HeldWrites` is the base of
:class:`~agentstream.state.changelog.ChangelogStore`.

Transactions (exactly-once; a store made with ``hold``)::

    put(key) ── hold(key)? ── no ──► pending: produced by flush() at once, as above
                   │ yes              (action state: durable outside any transaction)
                   ▼
                held[p] ── commit_held(p, producer, commit):
                   produce p's held records in the producer's open transaction
                   ──► commit() (the caller commits the transaction, with its offsets)
                   ──► apply them to RocksDB ──► applied offset := last acked offset of p
                       (unless an immediate flush is under way: it moves it when done)

- RocksDB never holds a held write before its transaction committed: an aborted
  transaction leaves no trace (recovery reads ``read_committed`` and skips it).
- Records of two producers interleave in changelog[p], so the applied offset cannot move
  with every write: a transactional record below an acked immediate one may be committed
  later. Records are applied as they are acked (immediate) or committed (held), but the
  applied offset moves to p's last acked offset only when nothing of p is in flight: no
  transaction of p between its first send and its commit, no immediate flush. Recovery
  from an older offset re-applies records in log order, which ends in the same state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaProducer

from agentstream.errors import AgentStreamError, StateStoreError
from agentstream.state._partition import PartitionDB
from agentstream.state._pending import Entry, PendingWrites, send_batches

__all__ = ["HeldWrites"]


class HeldWrites:
    """Held writes committed with a partition's transaction; the store supplies the rest."""

    _topic: str
    _held: PendingWrites
    _in_txn: set[int]
    _acked: dict[int, int] | None
    _dbs: dict[int, PartitionDB]
    _flush_lock: asyncio.Lock

    def _fail(self, exc: BaseException) -> AgentStreamError:
        raise NotImplementedError  # the store's (Flushing._fail)

    def held(self, partition: int) -> list[Entry]:
        """A snapshot of ``partition``'s held writes (each key's last), for :meth:`commit_held`."""
        return self._held.partition_snapshot(partition)

    async def commit_held(
        self,
        partition: int,
        entries: list[Entry],
        producer: AIOKafkaProducer,
        commit: Callable[[], Awaitable[None]],
    ) -> None:
        """Produce ``entries`` (from :meth:`held`) to ``partition`` of the changelog with
        ``producer``, inside its open transaction; await ``commit``, which commits that
        transaction; then apply them to RocksDB (and move the applied offset, see the
        design note).

        On an error the entries stay held, RocksDB is untouched and the applied offset
        stops moving; the caller aborts the transaction and discards the partition
        (:meth:`drop_held`, :meth:`revoke`): its state is the committed changelog.
        """
        assert self._acked is not None, "a store without hold has no transactions"
        if entries:
            self._in_txn.add(partition)
        last = -1
        if entries:
            queued = await send_batches(producer, self._topic, partition, entries)
            last = await queued.last_offset()
        await commit()
        db = self._dbs.get(partition)
        if db is None or not entries:  # revoked meanwhile: its next owner reads it
            return
        self._acked[partition] = max(self._acked.get(partition, -1), last)
        try:
            db.write(((key, value) for key, _, value in entries), None)
        except Exception as exc:
            raise self._fail(
                StateStoreError(f"applying changelog {self._topic}[{partition}] failed: {exc}")
            ) from exc
        self._held.settle(partition, entries)
        self._in_txn.discard(partition)
        self._advance(partition, flushing=False)

    def _advance(self, partition: int, *, flushing: bool) -> None:
        """Move ``partition``'s applied offset to its last acked one if nothing of it is in
        flight (``flushing``: called by the flush holding the lock, at its end)."""
        if partition in self._in_txn or (self._flush_lock.locked() and not flushing):
            return
        assert self._acked is not None
        last, db = self._acked.get(partition), self._dbs.get(partition)
        if last is not None and db is not None and (db.offset is None or last > db.offset):
            db.write((), last)

    def drop_held(self, partitions: Iterable[int]) -> int:
        """Discard the held writes of ``partitions`` (their transaction aborted or never
        ran); returns how many there were."""
        dropped = 0
        for partition in partitions:
            dropped += self._held.drop(partition)
            self._in_txn.discard(partition)
            if self._acked is not None:
                self._acked.pop(partition, None)
        return dropped
