"""The ceiling: a raw aiokafka consume -> produce pipe, no decoding, no state, no group.

    python -m benchmarks.raw_pipe BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC

Reads every partition of the input from the beginning and produces each record's key and
value to the output, awaiting the deliveries of each fetched batch; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks._common import PARTITIONS


async def pipe(bootstrap: str, source: str, sink: str) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=1)
    await consumer.start()
    await producer.start()
    consumer.assign([TopicPartition(source, p) for p in range(PARTITIONS)])
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            deliveries = [
                await producer.send(sink, key=m.key, value=m.value)
                for messages in batch.values()
                for m in messages
            ]
            if deliveries:
                await asyncio.gather(*deliveries)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(pipe(*sys.argv[1:4]))
