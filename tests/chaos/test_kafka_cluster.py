"""The 3-broker Kafka cluster of the chaos tier: replication and the loss of a broker."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agentstream.service.broker import ensure_topics
from tests.harness import wait_until
from tools.kafka import KafkaCluster


async def _partition(bootstrap: str, topic: str) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return dict(described["partitions"][0])
    finally:
        await admin.close()


async def test_acks_all_writes_survive_the_loss_of_the_leader(
    kafka_cluster: KafkaCluster, unique_name: Callable[[str], str]
) -> None:
    """Scenario: a topic on 3 brokers (replication factor 3, min.insync.replicas=2); 50
    records written with acks=all; the partition's leader is SIGKILLed; 50 more written;
    the killed broker restarted.

    We expect: a new leader is elected and the second 50 are accepted without the test
    restarting its producer; all 100 are read back in order; the restarted broker rejoins
    the in-sync replicas.
    """
    bootstrap = kafka_cluster.bootstrap
    topic = unique_name("replicated")
    await ensure_topics(bootstrap, {topic: 1}, replication_factor=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (configs,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
    assert entries["min.insync.replicas"] == "2"
    before = await _partition(bootstrap, topic)
    assert sorted(before["replicas"]) == [1, 2, 3]

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(50):
            await producer.send_and_wait(topic, str(i).encode(), partition=0)
        leader = before["leader"]
        kafka_cluster.kill(leader)
        started = time.monotonic()
        for i in range(50, 100):
            await producer.send_and_wait(topic, str(i).encode(), partition=0)
        failover_s = time.monotonic() - started
    finally:
        await producer.stop()

    after = await _partition(bootstrap, topic)
    assert after["leader"] not in (leader, -1), after
    assert failover_s < 60

    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        values: list[int] = []

        async def all_read() -> bool:
            for batch in (await consumer.getmany(tp, timeout_ms=100)).values():
                values.extend(int(r.value) for r in batch)
            return len(values) >= 100

        await wait_until(all_read, 30, "the 100 records from the surviving brokers")
    finally:
        await consumer.stop()
    assert values == list(range(100))

    kafka_cluster.restart(leader)

    async def back_in_sync() -> bool:
        return leader in (await _partition(bootstrap, topic))["isr"]

    await wait_until(back_in_sync, 60, f"broker {leader} to rejoin the in-sync replicas")
