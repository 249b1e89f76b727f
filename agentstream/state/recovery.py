"""Changelog recovery: a partition's database caught up with its changelog topic.

Design note::

    assign(p) ──► open p's database: applied offset N (None for a new database)
                  │
                  ▼
              read changelog[p] from N + 1 (from the beginning when None) up to its end,
              applying each fetched batch in one WriteBatch with its last offset
                  │  position >= end
                  ▼
              p is readable and writable

- The end comes from the Fetch response (its last stable offset, which is the high
  watermark unless transactions are open), not from ListOffsets, which undercounts on the
  embedded broker. An empty changelog ends with the first (empty) response.
- If the applied offset lies beyond the changelog's end, the database belongs to another
  changelog (e.g. the embedded broker restarted empty): it is discarded and rebuilt from
  the beginning. A real Kafka reports the same as OffsetOutOfRange.
- Tombstones (None values) delete. Records without a key are skipped.
- ``read_committed``: aborted transactional writes are never applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from agentstream.errors import BrokerError
from agentstream.state._partition import PartitionDB

__all__ = ["RecoveryProgress", "RecoveryStats", "recover"]

logger = logging.getLogger(__name__)

# Small but never 0 (a 0 ms fetch returns nothing on the embedded broker). A real Kafka
# answers as soon as data is there, so this only bounds the wait at the changelog's end.
_RECOVERY_FETCH_MAX_WAIT_MS = 20
_RECOVERY_STALL_WARNING_S = 10.0
_PROGRESS_LOG_S = 5.0  # how often a recovery under way logs how far it is


@dataclass(frozen=True)
class RecoveryProgress:
    """How far the recovery of one partition is (logged every 5 s, shown by /health).

    Attributes:
        partition: the partition.
        read: changelog records read so far.
        to_read: records from the start to the changelog's end (None until known).
        rate: records read per second so far.
    """

    partition: int
    read: int
    to_read: int | None
    rate: float


@dataclass(frozen=True)
class RecoveryStats:
    """What the last recovery of one partition did.

    Attributes:
        partition: the partition.
        start_offset: the first changelog offset read.
        end_offset: the changelog's end recovered up to (exclusive).
        records: changelog records applied to the local database.
        reset: the local database was discarded because it was ahead of the changelog.
        duration_s: wall time of the recovery.
    """

    partition: int
    start_offset: int
    end_offset: int
    records: int
    reset: bool
    duration_s: float


async def recover(
    partitions: Sequence[int],
    dbs: MutableMapping[int, PartitionDB],
    *,
    topic: str,
    bootstrap: str,
    client_kwargs: Mapping[str, Any],
    progress: MutableMapping[int, RecoveryProgress] | None = None,
) -> dict[int, RecoveryStats]:
    """Catch each partition's database in ``dbs`` up with the end of its changelog.

    A database found ahead of its changelog is replaced in ``dbs`` by a rebuilt one.
    ``progress`` is kept up to date with each partition still under way (and logged
    every 5 s); a finished partition leaves it.

    Returns:
        What each partition's recovery did.

    Raises:
        BrokerError: the changelog could not be read.
    """
    # A consumer per recovery, stopped with its assignment in place: aiokafka 0.14's
    # fetcher can swallow its own cancellation (and stop() then hangs forever) when a
    # consumer is stopped just after unsubscribe() or a change of assignment.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        **{
            **client_kwargs,
            "group_id": None,
            "enable_auto_commit": False,
            # An offset outside the log raises (we then rebuild from the changelog)
            # instead of silently jumping to the beginning or the end.
            "auto_offset_reset": "none",
            # Skips aborted transactional writes; the same as read_uncommitted for a
            # changelog written without transactions.
            "isolation_level": "read_committed",
            "fetch_max_wait_ms": _RECOVERY_FETCH_MAX_WAIT_MS,
        },
    )
    tps = {p: TopicPartition(topic, p) for p in partitions}
    started = time.monotonic()
    recoveries: dict[int, RecoveryStats] = {}
    try:
        await consumer.start()
        consumer.assign(list(tps.values()))
        start: dict[int, int] = {}
        applied = dict.fromkeys(partitions, 0)
        reset: set[int] = set()

        async def seek(partition: int) -> None:
            tp, offset = tps[partition], dbs[partition].offset
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset + 1)
            start[partition] = await consumer.position(tp)

        def rebuild(partition: int, highwater: int | None) -> None:
            _reset(dbs, topic, partition, highwater)
            reset.add(partition)
            applied[partition] = 0

        for partition in partitions:
            await seek(partition)
        remaining = dict(tps)
        warn_at = started + _RECOVERY_STALL_WARNING_S
        report_at = started + _PROGRESS_LOG_S
        while remaining:
            try:
                fetched = await consumer.getmany(
                    *remaining.values(), timeout_ms=_RECOVERY_FETCH_MAX_WAIT_MS
                )
            except OffsetOutOfRangeError as exc:  # a real Kafka: offset outside the log
                for tp in exc.args[0]:
                    rebuild(tp.partition, None)
                    await seek(tp.partition)
                continue
            for tp, records in fetched.items():
                changes = [(r.key, r.value) for r in records if r.key is not None]
                dbs[tp.partition].write(changes, records[-1].offset)
                applied[tp.partition] += len(changes)
            if progress is not None or time.monotonic() >= report_at:
                now = time.monotonic()
                under_way = {
                    p: _progress(consumer, tp, await consumer.position(tp), start, now - started)
                    for p, tp in remaining.items()
                }
                if progress is not None:
                    progress.update(under_way)
                if now >= report_at:
                    report_at = now + _PROGRESS_LOG_S
                    for state in under_way.values():
                        logger.info(
                            "changelog %s: recovering partition %d: %d of %s records read "
                            "(%.0f records/s)",
                            topic,
                            state.partition,
                            state.read,
                            "?" if state.to_read is None else state.to_read,
                            state.rate,
                        )
            # The end comes from the last Fetch response: its high watermark and last
            # stable offset (equal without transactions). aiokafka records them from
            # every successful response, also an empty one, so an empty changelog
            # ends here too; they are None until the first response.
            for partition, tp in list(remaining.items()):
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                end = consumer.last_stable_offset(tp)
                end = highwater if end is None else end
                position = await consumer.position(tp)
                if position > highwater:  # the embedded broker: offset beyond the log
                    rebuild(partition, highwater)
                    await seek(partition)
                elif position >= end:
                    del remaining[partition]
                    if progress is not None:
                        progress.pop(partition, None)
                    consumer.pause(tp)
                    recoveries[partition] = RecoveryStats(
                        partition=partition,
                        start_offset=start[partition],
                        end_offset=end,
                        records=applied[partition],
                        reset=partition in reset,
                        duration_s=time.monotonic() - started,
                    )
                    logger.info("changelog %s: %s", topic, recoveries[partition])
            if remaining and time.monotonic() > warn_at:
                warn_at += _RECOVERY_STALL_WARNING_S
                logger.warning(
                    "changelog %s: recovery of partitions %s still waiting for the "
                    "broker after %.0f s (does the topic exist with enough partitions?)",
                    topic,
                    sorted(remaining),
                    time.monotonic() - started,
                )
    except KafkaError as exc:
        raise BrokerError(
            f"recovering partitions {list(partitions)} of changelog {topic!r} failed: {exc!r}"
        ) from exc
    finally:
        await consumer.stop()
    return recoveries


def _progress(
    consumer: AIOKafkaConsumer,
    tp: TopicPartition,
    position: int,
    start: dict[int, int],
    elapsed_s: float,
) -> RecoveryProgress:
    first = start.get(tp.partition, position)
    read = max(position - first, 0)
    end = consumer.last_stable_offset(tp)
    end = consumer.highwater(tp) if end is None else end
    to_read = None if end is None else max(end - first, read)
    return RecoveryProgress(tp.partition, read, to_read, read / elapsed_s if elapsed_s > 0 else 0.0)


def _reset(
    dbs: MutableMapping[int, PartitionDB], topic: str, partition: int, highwater: int | None
) -> None:
    db = dbs.pop(partition)
    logger.warning(
        "%s was applied up to offset %s of changelog %s[%d], which is outside the log "
        "(high watermark %s): the local state is not from this changelog (was the broker "
        "reset?); discarding it and rebuilding it from the changelog",
        db.path,
        db.offset,
        topic,
        partition,
        "unknown" if highwater is None else highwater,
    )
    db.destroy()
    dbs[partition] = PartitionDB(db.path)
