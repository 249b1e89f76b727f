"""ChangelogStore against the embedded broker: reads, coalescing, recovery, handover."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.errors import BrokerError
from agentstream.state.changelog import ChangelogStore, PartitionNotAssignedError
from tests.brokers import Broker

StoreFactory = Callable[..., Awaitable[ChangelogStore]]
Record = tuple[int, bytes, bytes | None]  # offset, key, value


async def read_changelog(
    bootstrap: str, topic: str, partition: int, start: int = 0
) -> list[Record]:
    """Every record of ``topic[partition]`` from ``start`` up to the high watermark."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[Record] = []
        deadline = time.monotonic() + 10
        while True:
            for batch in (await consumer.getmany(tp, timeout_ms=20)).values():
                records += [(r.offset, r.key, r.value) for r in batch]
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                return records
            assert time.monotonic() < deadline, f"reading {topic}[{partition}] to its end"
    finally:
        await consumer.stop()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10):
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def store_factory(broker: Broker, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Start stores on the module's broker; whatever is still running is stopped after."""
    stores: list[ChangelogStore] = []

    async def make(topic: str, data_dir: Path | str = "a", **kwargs: Any) -> ChangelogStore:
        store = ChangelogStore(
            data_dir=tmp_path / data_dir,
            changelog_topic=topic,
            bootstrap=broker.bootstrap,
            **kwargs,
        )
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.stop()


async def test_reads_see_pending_and_flushed_writes(topic_factory, store_factory) -> None:
    topic = await topic_factory(2, "changelog")
    store = await store_factory(topic, flush_interval_s=60)  # only explicit flushes
    await store.assign([0, 1])
    assert store.assigned() == {0, 1}

    store.put(0, b"user:1", b"ann")
    store.put(0, b"user:2", b"bob")
    store.put(0, b"order:1", b"x")
    store.put(1, b"user:1", b"other partition")
    store.delete(0, b"user:2")
    assert store.get(0, b"user:1") == b"ann"
    assert store.get(0, b"user:2") is None
    assert store.get(1, b"user:1") == b"other partition"
    assert list(store.scan(0, b"user:")) == [(b"user:1", b"ann")]
    assert store.count(0) == 2

    await store.flush()
    assert list(store.scan(0, b"user:")) == [(b"user:1", b"ann")]

    # Pending writes merged with the database in key order: new, overwritten, deleted keys.
    store.put(0, b"user:0", b"new")
    store.put(0, b"user:3", b"new")
    store.put(0, b"user:1", b"changed")
    store.delete(0, b"order:1")
    expected = [(b"user:0", b"new"), (b"user:1", b"changed"), (b"user:3", b"new")]
    assert list(store.scan(0, b"user:")) == expected
    assert store.count(0, b"order:") == 0
    await store.flush()
    assert list(store.scan(0, b"")) == expected

    with pytest.raises(PartitionNotAssignedError):
        store.get(2, b"user:1")
    with pytest.raises(PartitionNotAssignedError):
        store.put(2, b"user:1", b"v")


async def test_writes_are_coalesced_in_last_write_order(
    broker, topic_factory, store_factory
) -> None:
    """Scenario: 100 puts to one key, then a, b, a, between two flushes.

    We expect: one changelog record for the 100 puts (the last value); then b before a.
    """
    topic = await topic_factory(1, "changelog")
    store = await store_factory(topic, flush_interval_s=60)
    await store.assign([0])
    for i in range(100):
        store.put(0, b"hot", b"%d" % i)
    await store.flush()
    assert [(k, v) for _, k, v in await read_changelog(broker.bootstrap, topic, 0)] == [
        (b"hot", b"99")
    ]

    store.put(0, b"a", b"1")
    store.put(0, b"b", b"1")
    store.delete(0, b"a")
    store.put(0, b"a", b"2")
    await store.flush()
    tail = await read_changelog(broker.bootstrap, topic, 0, start=1)
    assert [(k, v) for _, k, v in tail] == [(b"b", b"1"), (b"a", b"2")]


async def test_background_flush_reaches_the_changelog(broker, topic_factory, store_factory) -> None:
    topic = await topic_factory(1, "changelog")
    store = await store_factory(topic, flush_interval_s=0.01)
    await store.assign([0])
    store.put(0, b"k", b"v")

    async def in_changelog() -> bool:
        return len(await read_changelog(broker.bootstrap, topic, 0)) == 1

    await wait_for(in_changelog, "the background flush")


async def test_restart_on_the_same_data_dir_reads_only_the_tail(
    broker, topic_factory, store_factory
) -> None:
    """Scenario: a store stops; records it never applied are appended to its changelog
    (as when a worker dies between the ack and the RocksDB write); it restarts.

    We expect: the database is reused, only the tail is read, tombstones delete.
    """
    topic = await topic_factory(1, "changelog")
    first = await store_factory(topic, "dir")
    await first.assign([0])
    for i in range(20):
        first.put(0, b"k%02d" % i, b"v%d" % i)
    await first.flush()
    for i in range(5):
        first.delete(0, b"k%02d" % i)
    await first.stop()
    end = len(await read_changelog(broker.bootstrap, topic, 0))
    assert end == 25

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"tail", key=b"k19", partition=0)
        await producer.send_and_wait(topic, None, key=b"k18", partition=0)
    finally:
        await producer.stop()

    second = await store_factory(topic, "dir")
    await second.assign([0])
    stats = second.last_recovery(0)
    assert stats is not None
    assert (stats.start_offset, stats.end_offset, stats.records, stats.reset) == (
        25,
        27,
        2,
        False,
    )
    assert second.count(0) == 14
    assert second.get(0, b"k00") is None
    assert second.get(0, b"k18") is None
    assert second.get(0, b"k19") == b"tail"
    assert second.get(0, b"k05") == b"v5"


async def test_restart_on_an_empty_data_dir_restores_everything(
    topic_factory, store_factory
) -> None:
    """Scenario: a worker's disk is lost. We expect: the changelog restores the state."""
    topic = await topic_factory(2, "changelog")
    first = await store_factory(topic, "lost")
    await first.assign([0, 1])
    for partition in (0, 1):
        for i in range(50):
            first.put(partition, b"k%02d" % i, b"p%d-%d" % (partition, i))
        await first.flush()
        for i in range(0, 50, 2):
            first.delete(partition, b"k%02d" % i)
    await first.stop()

    second = await store_factory(topic, "fresh")
    await second.assign([0, 1])
    for partition in (0, 1):
        assert second.count(partition) == 25
        assert second.get(partition, b"k01") == b"p%d-1" % partition
        assert second.get(partition, b"k02") is None
        stats = second.last_recovery(partition)
        assert stats is not None and (stats.start_offset, stats.records) == (0, 75)


async def test_partition_handover_between_two_workers(topic_factory, store_factory) -> None:
    """Scenario: worker A writes partition 0 and loses it to worker B (own data dir);
    B writes more; A gets it back with its stale local database.

    We expect: B sees A's writes; A then sees B's writes, reading only B's records.
    """
    topic = await topic_factory(2, "changelog")
    a = await store_factory(topic, "worker-a")
    b = await store_factory(topic, "worker-b")
    await a.assign([0, 1])
    await b.assign([])
    for i in range(10):
        a.put(0, b"k%d" % i, b"from a")
    a.put(1, b"stays", b"with a")
    await a.revoke([0])
    assert a.assigned() == {1}
    assert a.get(1, b"stays") == b"with a"

    await b.assign([0])
    assert b.count(0) == 10 and b.get(0, b"k3") == b"from a"
    b.put(0, b"k3", b"from b")
    b.delete(0, b"k4")
    b.put(0, b"new", b"from b")
    await b.revoke([0])
    assert b.assigned() == frozenset()

    await a.assign([0])
    assert a.get(0, b"k3") == b"from b"
    assert a.get(0, b"k4") is None
    assert a.get(0, b"new") == b"from b"
    assert a.count(0) == 10
    stats = a.last_recovery(0)
    assert stats is not None and (stats.records, stats.reset) == (3, False)


async def test_database_ahead_of_the_changelog_is_rebuilt(topic_factory, store_factory) -> None:
    """Scenario: the local database was applied from a changelog that no longer exists
    (the embedded broker restarted empty). We expect: it is discarded, not mixed in.
    """
    old_topic = await topic_factory(1, "changelog")
    old = await store_factory(old_topic, "dir")
    await old.assign([0])
    old.put(0, b"ghost", b"boo")
    await old.stop()

    new_topic = await topic_factory(1, "changelog")
    store = await store_factory(new_topic, "dir")
    await store.assign([0])
    stats = store.last_recovery(0)
    assert stats is not None and stats.reset
    assert store.get(0, b"ghost") is None
    store.put(0, b"alive", b"yes")
    await store.flush()


async def test_flush_waits_for_a_paused_broker(broker, topic_factory, store_factory) -> None:
    """Scenario: the broker freezes with writes pending. We expect: flush() returns only
    after the broker is back, and the write is then in the changelog.
    """
    topic = await topic_factory(1, "changelog")
    store = await store_factory(topic, flush_interval_s=60)
    await store.assign([0])
    store.put(0, b"k", b"v")
    broker.pause()
    try:
        flush = asyncio.create_task(store.flush())
        done, _ = await asyncio.wait({flush}, timeout=0.3)
        assert not done, "flush() returned while the broker was paused"
    finally:
        broker.resume()
    await asyncio.wait_for(flush, 10)
    assert [(k, v) for _, k, v in await read_changelog(broker.bootstrap, topic, 0)] == [
        (b"k", b"v")
    ]


async def test_fatal_produce_error_surfaces_and_fails_the_store(
    topic_factory, store_factory
) -> None:
    """Scenario: a value larger than the producer's max request size.

    We expect: flush() raises a BrokerError; later writes are refused; reads still work.
    """
    topic = await topic_factory(1, "changelog")
    store = await store_factory(topic, flush_interval_s=60)
    await store.assign([0])
    store.put(0, b"big", b"x" * (2 * 1024 * 1024))
    with pytest.raises(BrokerError, match="MessageSizeTooLarge"):
        await store.flush()
    with pytest.raises(BrokerError, match="failed earlier"):
        store.put(0, b"small", b"x")
    with pytest.raises(BrokerError, match="failed earlier"):
        await store.flush()
    assert store.get(0, b"big") is not None


async def test_writes_during_background_flushes_match_a_model(topic_factory, store_factory) -> None:
    """Scenario: random puts and deletes on two partitions while background flushes run
    (overwrites of keys whose previous value is in flight included).

    We expect: reads always match a plain dict; after a restart on an empty data dir the
    changelog restores exactly the same state.
    """
    rng = random.Random(7)
    topic = await topic_factory(2, "changelog")
    store = await store_factory(topic, "live", flush_interval_s=0.001)
    await store.assign([0, 1])
    model: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
    flushing: asyncio.Task[None] | None = None
    for step in range(3000):
        partition, key = rng.randrange(2), b"k%02d" % rng.randrange(40)
        if rng.random() < 0.2:
            store.delete(partition, key)
            model[partition].pop(key, None)
        else:
            store.put(partition, key, b"%d" % step)
            model[partition][key] = b"%d" % step
        if step % 50 == 0:
            # Start a flush and let it take its snapshot and send; the next writes
            # overwrite keys whose previous value is in flight.
            if flushing is not None:
                await flushing
            flushing = asyncio.create_task(store.flush())
            await asyncio.sleep(0)
        if step % 50 == 25:
            await asyncio.sleep(0)  # the background flusher may run too
            assert dict(store.scan(partition, b"")) == model[partition]
    assert flushing is not None
    await flushing
    await store.stop()

    restored = await store_factory(topic, "restored")
    await restored.assign([0, 1])
    for partition in (0, 1):
        assert dict(restored.scan(partition, b"")) == model[partition]
