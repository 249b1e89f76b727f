"""ChangelogStore with transactions (exactly-once) on a real Kafka: held writes reach
RocksDB only after their transaction committed; action state is durable at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agentstream.service.broker import ensure_topics
from agentstream.service.transactions import held
from agentstream.state.changelog import ChangelogStore
from tests.brokers import Broker


async def _store(broker: Broker, topic: str, data_dir: Path) -> ChangelogStore:
    store = ChangelogStore(
        data_dir=data_dir, changelog_topic=topic, bootstrap=broker.bootstrap, hold=held
    )
    await store.start()
    await store.assign([0])
    return store


async def _transactional(broker: Broker, txn_id: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, transactional_id=txn_id, acks="all"
    )
    await producer.start()
    await producer.begin_transaction()
    return producer


async def test_held_writes_apply_after_commit_and_vanish_when_aborted(
    real_kafka: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a store holding key-state writes for transactions; an action-state write
    (b"r...") and a key-state write (b"k...") are made; the action state is flushed, the
    key state committed in a transaction; then another key-state write is produced in a
    transaction that aborts, and the store is stopped without its RocksDB applying it.
    We expect: reads see both writes at once; flush() produces only the action state;
    after the commit RocksDB has the key state; a store recovered from the changelog in a
    fresh directory has the committed writes and no trace of the aborted one."""
    topic = unique_name("changelog")
    await ensure_topics(real_kafka.bootstrap, {topic: 1})
    store = await _store(real_kafka, topic, tmp_path / "a")
    producer = await _transactional(real_kafka, unique_name("txn"))
    try:
        store.put(0, b"r-run", b"done")
        store.put(0, b"k-key", b"v1")
        assert store.get(0, b"k-key") == b"v1" and store.get(0, b"r-run") == b"done"
        assert [k for k, _ in store.scan(0, b"")] == [b"k-key", b"r-run"]
        await store.flush()
        assert store.held(0) and [e[0] for e in store.held(0)] == [b"k-key"]
        db = store._dbs[0].db  # the database itself: what is applied
        assert db.get(b"r-run") == b"done" and db.get(b"k-key") is None

        await store.commit_held(0, store.held(0), producer, producer.commit_transaction)
        assert db.get(b"k-key") == b"v1" and not store.held(0)
        applied = store._dbs[0].offset
        assert applied is not None and applied >= 1, "the applied offset did not move"

        await producer.begin_transaction()
        store.put(0, b"k-key", b"aborted")

        async def abort() -> None:
            await producer.abort_transaction()
            raise RuntimeError("the transaction aborted")

        with pytest.raises(RuntimeError):
            await store.commit_held(0, store.held(0), producer, abort)
        store.put(0, b"r-later", b"x")
        await store.flush()  # an immediate flush after it: the applied offset stays
        assert store._dbs[0].offset == applied
        assert db.get(b"k-key") == b"v1", "an aborted write reached RocksDB"
        assert store.get(0, b"k-key") == b"aborted"  # still held: the caller resets
    finally:
        await producer.stop()
        await store.stop()

    fresh = await _store(real_kafka, topic, tmp_path / "b")
    try:
        assert fresh.get(0, b"k-key") == b"v1"
        assert fresh.get(0, b"r-run") == b"done"
    finally:
        await fresh.stop()
