"""The store's writes not yet acked by the changelog, reads merged with them, and one
flush of them to the changelog and RocksDB.

Per partition, ``key -> (version, value)``: the last write of a key wins and moves the key
to the end (changelog records are produced in that order); ``value`` is bytes, None (a
tombstone) or a deferred encoder called when the value is first needed. A flush takes a
snapshot, and once it is acked and applied drops the entries whose version did not change
meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import RecordMetadata

from agentstream.errors import StateStoreError
from agentstream.state._partition import PartitionDB

__all__ = ["Batches", "PendingWrites", "Value", "merge", "produce_pending", "send_batches"]

# bytes, a tombstone (None), or a deferred encoder of the value
Value = bytes | Callable[[], bytes] | None
Entry = tuple[bytes, int, bytes | None]  # (key, version, value) of a snapshot


class PendingWrites:
    """Writes buffered until the changelog acks them."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[bytes, tuple[int, Value]]] = {}
        self._versions = itertools.count(1)
        self.last_version = 0  # version of the latest write

    def write(self, partition: int, key: bytes, value: Value) -> None:
        pending = self._partitions.setdefault(partition, {})
        pending.pop(key, None)  # a re-put moves the key to the end
        self.last_version = version = next(self._versions)
        pending[key] = (version, value)

    def lookup(self, partition: int, key: bytes) -> tuple[bool, bytes | None]:
        """(whether ``key`` has a pending write, its value: None for a tombstone)."""
        pending = self._partitions.get(partition)
        entry = pending.get(key) if pending else None
        if entry is None:
            return False, None
        return True, _resolve(pending, key, entry)  # type: ignore[arg-type]

    def items_from(self, partition: int, prefix: bytes) -> list[tuple[bytes, bytes | None]]:
        """The pending (key, value) pairs whose key starts with ``prefix``, sorted."""
        pending = self._partitions.get(partition, {})
        return sorted(
            (key, _resolve(pending, key, entry))
            for key, entry in list(pending.items())
            if key.startswith(prefix)
        )

    def partition_snapshot(self, partition: int) -> list[Entry]:
        """One partition's pending entries, each key's last write, in write order."""
        pending = self._partitions.get(partition)
        if not pending:
            return []
        return [
            (key, entry[0], _resolve(pending, key, entry)) for key, entry in list(pending.items())
        ]

    def snapshot(self) -> list[tuple[int, list[Entry]]]:
        """Every partition's pending entries, each key's last write, in write order."""
        return [
            (
                partition,
                [
                    (key, entry[0], _resolve(pending, key, entry))
                    for key, entry in list(pending.items())
                ],
            )
            for partition, pending in self._partitions.items()
            if pending
        ]

    def settle(self, partition: int, entries: Iterable[Entry]) -> None:
        """Drop ``entries`` (acked and applied) unless their key was written again since."""
        pending = self._partitions[partition]
        for key, version, _ in entries:
            entry = pending.get(key)
            if entry is not None and entry[0] == version:
                del pending[key]

    def drop(self, partition: int) -> int:
        """Forget ``partition``'s pending writes; returns how many there were."""
        return len(self._partitions.pop(partition, {}))

    def clear(self) -> None:
        self._partitions.clear()

    def __len__(self) -> int:
        return sum(len(pending) for pending in self._partitions.values())


def _resolve(
    pending: dict[bytes, tuple[int, Value]], key: bytes, entry: tuple[int, Value]
) -> bytes | None:
    version, value = entry
    if callable(value):
        value = value()
        pending[key] = (version, value)
    return value


def merge(
    stored: Iterable[Any],
    prefix: bytes,
    pending: list[tuple[bytes, bytes | None]],
) -> Iterator[tuple[bytes, bytes]]:
    """Merge the database's items from ``prefix`` on with the sorted pending entries."""
    i = 0
    for key, value in stored:
        if not key.startswith(prefix):
            break
        while i < len(pending) and pending[i][0] < key:
            pending_key, pending_value = pending[i]
            i += 1
            if pending_value is not None:
                yield pending_key, pending_value
        if i < len(pending) and pending[i][0] == key:
            pending_value = pending[i][1]
            i += 1
            if pending_value is not None:
                yield key, pending_value
            continue
        yield key, value
    for pending_key, pending_value in pending[i:]:
        if pending_value is not None:
            yield pending_key, pending_value


class Batches(NamedTuple):
    """The delivery futures of one partition's records, queued as whole batches."""

    futures: list[asyncio.Future[Any]]
    last_count: int  # records in the last batch

    async def last_offset(self) -> int:
        """The offset of the last record, once every batch is acked (or the first error)."""
        results = await asyncio.gather(*self.futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        last: RecordMetadata = results[-1]
        return int(last.offset) + self.last_count - 1


async def send_batches(
    producer: AIOKafkaProducer, topic: str, partition: int, entries: Iterable[Entry]
) -> Batches:
    """Queue ``entries`` for ``partition`` of ``topic`` as whole record batches: a future
    per batch of up to the producer's batch size, not one per record.

    The batches are closed before they are queued, so no other send joins them. If queuing
    fails, the batches already queued are awaited (their errors retrieved) and it raises.
    """
    futures: list[asyncio.Future[Any]] = []
    # What producer.send checks per record (a batch holds one record larger than the
    # batch size, so only a batch of one can be over the request size).
    limit: int = getattr(producer, "_max_request_size", 1024 * 1024)

    async def queue(batch: Any) -> None:
        batch.close()
        if batch.size() > limit:
            raise MessageSizeTooLargeError(
                f"a changelog record of {batch.size()} bytes is larger than the producer's "
                f"max_request_size ({limit})"
            )
        futures.append(await producer.send_batch(batch, topic, partition=partition))

    try:
        batch = producer.create_batch()
        for key, _, value in entries:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await queue(batch)
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty one takes any
        await queue(batch)
    except BaseException:
        await asyncio.gather(*futures, return_exceptions=True)
        raise
    return Batches(futures, batch.record_count())


async def produce_pending(
    pending: PendingWrites,
    producer: AIOKafkaProducer,
    topic: str,
    dbs: Mapping[int, PartitionDB],
    acked: dict[int, int] | None = None,
) -> None:
    """One flush: produce the snapshot of ``pending`` to ``topic`` (each partition's
    records to its partition, in whole batches), and once a partition's are all acked
    apply them to its database with their last offset, and drop them from ``pending``.

    With ``acked`` (a store with transactions) the databases' applied offsets stay
    where they are and ``acked`` keeps each partition's last acked offset instead.

    A partition whose records failed stays pending (produced again by the next flush);
    the first error is raised after the others are settled.

    Raises:
        StateStoreError: RocksDB failed.
    """
    # (partition, [(key, version, value)]) in each key's last-write order.
    batches = pending.snapshot()
    if not batches:
        return
    sent: list[tuple[int, list[Entry], Batches]] = []
    error: BaseException | None = None
    for partition, entries in batches:
        try:
            queued = await send_batches(producer, topic, partition, entries)
        except Exception as exc:
            error = exc
            break
        sent.append((partition, entries, queued))
    for partition, entries, queued in sent:
        try:
            last = await queued.last_offset()
        except Exception as exc:
            error = error or exc
            continue  # stays pending, produced again by the next flush
        if acked is not None:
            acked[partition] = max(acked.get(partition, -1), last)
        try:
            dbs[partition].write(
                ((key, value) for key, _, value in entries), None if acked is not None else last
            )
        except Exception as exc:
            raise StateStoreError(
                f"applying changelog {topic}[{partition}] to RocksDB failed: {exc}"
            ) from exc
        pending.settle(partition, entries)
    if error is not None:
        raise error
