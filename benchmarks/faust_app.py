"""The baseline: a plain Faust agent forwarding each input to the output (JSON in and out).

    python -m benchmarks.faust_app worker --without-web -l warning

Configured by environment: ``BENCH_BROKER`` (kafka://host:port), ``BENCH_APP``,
``BENCH_IN``, ``BENCH_OUT``, ``BENCH_DATA_DIR``, and ``BENCH_FAUST_FETCH_WAIT_MS``.

Faust hard-codes the consumer fetch wait to 1500 ms (``fetch_max_wait_ms=1500`` in
``faust.transport.drivers.aiokafka``); on the embedded broker every idle fetch is answered
at half the wait, so a record arriving at an idle worker waits ~0.75 s. With
``BENCH_FAUST_FETCH_WAIT_MS`` set, the consumer Faust creates gets that wait instead (the
like-for-like baseline: agentstream's own fetch wait); unset, Faust runs stock.
Settings are BROKER.md's for the embedded broker, without ``producer_max_batch_size=1``
(only tables need it). With ``BENCH_FAUST_EMBEDDED=0`` (a real Kafka): Faust's own session,
heartbeat and rebalance timeouts instead of the embedded broker's 2 s / 0.5 s / 2 s, and
agentstream's producer linger (1 ms) instead of BROKER.md's 0 (Faust's default, which on a
real Kafka sends a produce request per record: 1.0-1.3k rec/s against 1.0-2.2k with 1 ms in
the same session).
"""

from __future__ import annotations

import os

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_WAIT_MS = os.environ.get("BENCH_FAUST_FETCH_WAIT_MS")

if FETCH_WAIT_MS:
    _create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = _create(self, transport)
        consumer._fetch_max_wait_ms = int(FETCH_WAIT_MS)  # read by AIOKafkaConsumer.start()
        return consumer

    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer

EMBEDDED = os.environ.get("BENCH_FAUST_EMBEDDED", "1") == "1"
"""Whether the broker is the embedded one (the default). On a real Kafka the embedded
broker's short sessions are refused (``group.min.session.timeout.ms`` is 6 s): Faust keeps
its own group timeouts there."""

GROUP_TIMEOUTS = (
    dict(broker_session_timeout=2.0, broker_heartbeat_interval=0.5, broker_rebalance_timeout=2.0)
    if EMBEDDED
    else {}
)

app = faust.App(
    os.environ.get("BENCH_APP", "bench-faust"),
    broker=os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092"),
    datadir=os.environ.get("BENCH_DATA_DIR", "faust-data"),
    store="memory://",
    **GROUP_TIMEOUTS,
    producer_linger=0.0 if EMBEDDED else 0.001,
    processing_guarantee="at_least_once",
    topic_replication_factor=1,
    topic_partitions=4,
)

source = app.topic(os.environ.get("BENCH_IN", "bench-in"), value_serializer="json")
sink = app.topic(os.environ.get("BENCH_OUT", "bench-out"), value_serializer="json")


@app.agent(source)
async def forward(stream):  # type: ignore[no-untyped-def]
    async for key, value in stream.items():
        await sink.send(key=key, value=value)


if __name__ == "__main__":
    app.main()
