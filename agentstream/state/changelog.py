"""Partitioned RocksDB state with a Kafka changelog: agentstream's tables.

One :class:`ChangelogStore` holds one app's key-value state, partitioned like the input
topic. Each assigned partition ``p`` has its own RocksDB database at
``data_dir/partition-{p}``, and partition ``p`` of the changelog topic records every change
made to it. The changelog is the truth; the database is a cache of it that may be lost at
any time and is rebuilt from the changelog.

Design note::

    put / delete ──► pending[p]: key -> (version, value | None)
                     (last write wins; a re-put moves the key to the end)
                          │  every flush_interval_s, or flush()
                          ▼
                     produce to changelog[p], in pending order (acks=all)
                          │  all of p's records acked
                          ▼
                     one RocksDB WriteBatch on p's database: the records, plus the meta
                     key "applied up to changelog offset N"
                          │
                          ▼
                     drop the pending entries whose version did not change meanwhile

- Reads see the pending writes first, then the database (read-your-writes).
- Coalescing: between two flushes only the last value of a key is produced.
- The database only ever holds acked changes, and the meta offset is written in the same
  WriteBatch as the changes, so "database + changelog from meta offset + 1" is always the
  whole state.
- Recovery (:meth:`ChangelogStore.assign`, :mod:`agentstream.state.recovery`) reads
  changelog[p] from meta offset + 1 up to its end before p is readable.
- A produce error that aiokafka reports as retriable is retried with backoff; any other
  error fails the store: :meth:`ChangelogStore.flush` raises it (the background flusher
  logs it) and later writes are refused. Nothing is dropped silently.
- At-least-once: commit an input offset only after :meth:`ChangelogStore.flush` returned
  for the state changes that input caused.

Transactions (exactly-once; a store made with ``hold``): see :mod:`agentstream.state._held`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from agentstream.errors import (
    AgentStreamError,
    BrokerError,
    PartitionNotAssignedError,
    StateStoreError,
)
from agentstream.state._flushing import Flushing
from agentstream.state._partition import PartitionDB, open_partition
from agentstream.state._pending import PendingWrites, Value, merge
from agentstream.state.recovery import RecoveryProgress, RecoveryStats, recover

__all__ = [
    "ChangelogStore",
    "PartitionNotAssignedError",
    "RecoveryStats",
    "StateStoreError",
]

logger = logging.getLogger(__name__)


class ChangelogStore(Flushing):
    """Key-value state per partition in RocksDB, changelogged to a Kafka topic.

    Reads and writes are synchronous and never block; writes are buffered and a background
    task produces them to the changelog. Use from one event loop only.

    Args:
        data_dir: the directory holding one database per partition.
        changelog_topic: the changelog topic, created beforehand with as many partitions as
            the input topic (e.g. with ``ensure_topics``; compacted on a real Kafka).
        bootstrap: ``host:port[,host:port...]``.
        client_kwargs: settings for the recovery consumers (the store fixes their group,
            offset reset, isolation level and fetch wait) and, when the store creates its
            own producer, for that producer too: then only settings both accept
            (security, SASL, client_id, timeouts).
        producer: a started producer to share (the store neither starts nor stops it; it
            must use ``acks="all"`` for the changelog to be durable on a real Kafka). The
            store creates its own when None.
        flush_interval_s: how long writes are buffered (and coalesced) before the
            background flush.
        hold: the keys whose writes are held for a transaction (exactly-once): not
            produced by :meth:`flush`, only by :meth:`commit_held`. None: no transactions.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        changelog_topic: str,
        bootstrap: str,
        client_kwargs: Mapping[str, Any] | None = None,
        producer: AIOKafkaProducer | None = None,
        flush_interval_s: float = 0.05,
        hold: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._data_dir = Path(data_dir)
        self._topic = changelog_topic
        self._bootstrap = bootstrap
        self._client_kwargs = dict(client_kwargs or {})
        self._producer = producer
        self._owns_producer = producer is None
        self._flush_interval_s = flush_interval_s
        self._dbs: dict[int, PartitionDB] = {}  # open databases
        self._ready: set[int] = set()  # recovered, readable and writable
        self._pending = PendingWrites()
        self._hold = hold
        self._held = PendingWrites()  # writes waiting for their partition's transaction
        # With transactions: each partition's last acked changelog offset (immediate
        # flushes do not move the databases' applied offsets, commit_held does).
        self._acked: dict[int, int] | None = None if hold is None else {}
        self._in_txn: set[int] = set()  # partitions with transactional records in flight
        self._durable_version = 0  # every write up to this version is flushed
        self._flush_task: asyncio.Task[None] | None = None
        self._recoveries: dict[int, RecoveryStats] = {}
        self._progress: dict[int, RecoveryProgress] = {}  # recoveries under way
        self._dirty = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._rebalance_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._failure: AgentStreamError | None = None
        self._started = False

    @property
    def changelog_topic(self) -> str:
        return self._topic

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the producer (unless shared) and the background flusher."""
        if self._started:
            return
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self._owns_producer:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap, **{"acks": "all", **self._client_kwargs}
            )
            try:
                await producer.start()
            except KafkaError as exc:
                await producer.stop()
                raise BrokerError(
                    f"cannot connect to the broker at {self._bootstrap}: {exc!r}"
                ) from exc
            self._producer = producer
        self._started = True
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"flush {self._topic}")

    async def stop(self) -> None:
        """Flush the pending writes, then close every database and the own producer.

        A flush in progress is waited for, also while it retries an unreachable broker.
        Do not call it concurrently with :meth:`assign` or :meth:`revoke`.

        Raises:
            BrokerError: the final flush failed (the databases are closed anyway).
        """
        if not self._started:
            return
        try:
            if self._flusher is not None:
                async with self._flush_lock:  # never interrupt a flush half-way
                    self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
                self._flusher = None
            if self._failure is None:
                await self.flush()
        finally:
            if held := len(self._held):
                logger.info(
                    "changelog %s: %d writes of uncommitted transactions discarded (the "
                    "committed changelog is the state)",
                    self._topic,
                    held,
                )
            self._held.clear()
            lost = len(self._pending)
            if lost:
                logger.error(
                    "changelog %s: store stopped with %d unpersisted writes after: %s",
                    self._topic,
                    lost,
                    self._failure,
                )
            for db in self._dbs.values():
                db.close()
            self._dbs.clear()
            self._ready.clear()
            self._pending.clear()
            if self._owns_producer and self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()
            self._started = False

    # -- assignment and recovery -------------------------------------------------------

    async def assign(self, partitions: Iterable[int]) -> None:
        """Open the partitions' databases and recover them from the changelog.

        Returns when every partition is caught up with its changelog's end; only then are
        they readable and writable. Already assigned partitions are left as they are.
        """
        async with self._rebalance_lock:
            self._check_started()
            new = sorted(set(partitions) - self._ready)
            if not new:
                return
            try:
                for partition in new:
                    if partition < 0:
                        raise ValueError(f"partition must be >= 0, not {partition}")
                    if partition not in self._dbs:
                        path = self._data_dir / f"partition-{partition}"
                        self._dbs[partition] = open_partition(path)
                self._recoveries.update(
                    await recover(
                        new,
                        self._dbs,
                        topic=self._topic,
                        bootstrap=self._bootstrap,
                        client_kwargs=self._client_kwargs,
                        progress=self._progress,
                    )
                )
            except BaseException:
                for partition in new:
                    self._progress.pop(partition, None)
                    db = self._dbs.pop(partition, None)
                    if db is not None:
                        db.close()
                raise
            self._ready.update(new)

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Flush, then close the partitions' databases (their state stays on disk)."""
        async with self._rebalance_lock:
            gone = [p for p in set(partitions) if p in self._dbs]
            if not gone:
                return
            self._ready.difference_update(gone)  # no reads or writes from here on
            try:
                if self._failure is None:
                    await self.flush()
            finally:
                self.drop_held(gone)
                for partition in gone:
                    self._dbs.pop(partition).close()
                    if lost := self._pending.drop(partition):
                        logger.error(
                            "changelog %s[%d]: revoked with %d unpersisted writes after: %s",
                            self._topic,
                            partition,
                            lost,
                            self._failure,
                        )

    def assigned(self) -> frozenset[int]:
        """The partitions that are recovered and readable/writable."""
        return frozenset(self._ready)

    def recovering(self) -> list[RecoveryProgress]:
        """The recoveries under way: records read, to read, rate (for /health)."""
        return [self._progress[p] for p in sorted(self._progress)]

    def last_recovery(self, partition: int) -> RecoveryStats | None:
        """What the last :meth:`assign` of ``partition`` read from the changelog."""
        return self._recoveries.get(partition)

    # -- reads and writes --------------------------------------------------------------

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The value of ``key``, including writes not yet flushed; None if absent."""
        db = self._readable(partition)
        found, value = self._pending.lookup(partition, key)
        if not found and self._hold is not None:
            found, value = self._held.lookup(partition, key)
        if not found:
            value = db.db.get(key)
        return value

    def put_deferred(self, partition: int, key: bytes, encode: Callable[[], bytes]) -> None:
        """Like :meth:`put`, with the value encoded only when it is needed (read or flush).

        For values rewritten many times between flushes (a busy key's bookkeeping): only
        the last one is ever encoded. ``encode`` must return what the value is *now*.
        """
        self._write(partition, key, encode)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``; buffered, produced to the changelog in the background."""
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        self._write(partition, key, value)

    def delete(self, partition: int, key: bytes) -> None:
        """Delete ``key`` (a tombstone in the changelog)."""
        self._write(partition, key, None)

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The items whose key starts with ``prefix``, in key order, pending writes included.

        The view is taken when scan() is called. Exhaust or drop the iterator before the
        partition is revoked: it keeps the database open.
        """
        db = self._readable(partition)
        pending = self._pending.items_from(partition, prefix)
        if self._hold is not None:  # a key is in one of the two, never in both
            pending = sorted(pending + self._held.items_from(partition, prefix))
        return merge(db.db.items(from_key=prefix), prefix, pending)

    def count(self, partition: int, prefix: bytes = b"") -> int:
        """The number of keys starting with ``prefix``."""
        return sum(1 for _ in self.scan(partition, prefix))

    def _readable(self, partition: int) -> PartitionDB:
        if partition not in self._ready:
            raise PartitionNotAssignedError(partition, self._topic)
        return self._dbs[partition]

    def _write(self, partition: int, key: bytes, value: Value) -> None:
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        self._raise_if_failed()
        self._readable(partition)
        if self._hold is not None and self._hold(key):
            self._held.write(partition, key, value)
            return
        self._pending.write(partition, key, value)
        self._dirty.set()

    def _check_started(self) -> None:
        if not self._started:
            raise StateStoreError(f"the store changelogged to {self._topic!r} is not started")
