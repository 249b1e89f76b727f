"""The worker: drives the :class:`Operator` from Kafka.

Design note::

    consumer (group = app name, range assignor: input p and internal p together)
      input record ──decode──► Operator.on_input  (bad bytes ──► dead-letter topic)
      internal record ───────► Operator.on_routed_event
    Operator ──► OutputSink: output topic (source timestamp, event id + watermark headers),
                 awaited, so an input is never marked done before its outputs are acked
             ──► EventRouter: internal topic, same partition as the input
             ──► state: ChangelogStore (RocksDB per partition + changelog topic)

Commits, transactions (``processing_guarantee="exactly_once"``, real Kafka only) and
rebalances are in :mod:`agentstream.service.rebalance` (the worker's base class) and
:mod:`agentstream.service.transactions`.
Redelivered input records are recognised per (partition, offset) and dropped.

Keys are scoped to their input partition: the operator's state of a key is the
``(partition, key)`` slot, so a key whose records arrive on two partitions (producers with
different partitioners, explicit partitions, null keys) is processed per partition, each
in arrival order, with one warning per key and the ``keys_on_several_partitions`` metric.
Null keys are processed: each partition's null-key records form one key of that partition.

What the worker writes (outputs, routed events, dead letters) goes through
:class:`~agentstream.service.output.KafkaOutput`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import InvalidSessionTimeoutError, KafkaError

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.observability.eventlog import EventLogger, create_event_logger
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.operator import Operator
from agentstream.runtime.records import InputRecord
from agentstream.serde import loads, unpack_event
from agentstream.service.app import AgentApp
from agentstream.service.assignor import CoPartitionedAssignor
from agentstream.service.backpressure import over_share
from agentstream.service.broker import client_settings, session_refused
from agentstream.service.codecs import codec_for, decode_key
from agentstream.service.keys import client_id, input_id
from agentstream.service.layout import topic_counts
from agentstream.service.migration import Migration
from agentstream.service.output import (
    HEADER_EVENT_ID,
    HEADER_WATERMARK,
    NO_WATERMARK,
    PRODUCER_BATCH_BYTES,
    DeadLettered,
    KafkaOutput,
)
from agentstream.service.rebalance import PartitionDuties, PartitionListener
from agentstream.service.report import WorkerReport
from agentstream.service.settings import mask_url
from agentstream.service.tables import ChangelogActionStateStore, ChangelogKeyState
from agentstream.service.transactions import (
    EmittedOutputs,
    PartitionLost,
    Transactions,
    held,
)
from agentstream.service.watch import BrokerWatch, KeySpread
from agentstream.state.changelog import ChangelogStore

__all__ = ["HEADER_EVENT_ID", "HEADER_WATERMARK", "NO_WATERMARK", "DeadLettered", "Worker"]

log = logging.getLogger(__name__)


class Worker(PartitionDuties, WorkerReport):
    """One worker process of an app (run several for a consumer group)."""

    def __init__(self, app: AgentApp, *, metrics: RuntimeMetrics | None = None):
        self.app = app
        self.settings = settings = app.settings
        if settings.processing_guarantee == "exactly_once" and settings.embedded_broker:
            raise ConfigurationError(
                "exactly_once needs Kafka transactions, which the embedded development "
                "broker does not support; use at_least_once (the default) or a real Kafka"
            )
        self._exactly_once = settings.processing_guarantee == "exactly_once"
        self._transactions: Transactions | None = None
        self._to_reset: dict[int, BaseException] = {}  # partitions whose transaction failed
        # Fenced partitions: another worker took them over; we wait for the rebalance that
        # tells us so, and take them back only if it has not come by this (monotonic) time.
        self._fenced: dict[int, float] = {}
        self.metrics = metrics or RuntimeMetrics()
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self.error: BaseException | None = None
        self._in_codec = codec_for(settings.input_codec)
        self._bootstrap = ",".join(settings.bootstrap_servers)
        self._client = settings.client_kwargs()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._store: ChangelogStore | None = None
        self._operator: Operator | None = None
        self._event_logger: EventLogger | None = None
        self._output: KafkaOutput | None = None
        self._spread = KeySpread(self.metrics)
        self._broker_watch: BrokerWatch | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._read_from: dict[TopicPartition, int] = {}  # see WorkerReport.position
        self._assigned: set[int] = set()
        self._paused: set[TopicPartition] = set()  # input partitions over their share
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(settings.thread_pool_size, "agentstream-durable")
        self._key_state: ChangelogKeyState | None = None
        self._action_states: ChangelogActionStateStore | None = None
        self._migration = Migration(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        s, app = self.settings, self.app
        try:
            await app.create_topics(self._bootstrap, self._client)
            if not s.embedded_broker:  # an input topic recreated with fewer partitions
                counts = await topic_counts(self._bootstrap, self._client, [app.input_topic])
                await self._migration.check(counts[app.input_topic])
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                linger_ms=1,
                max_request_size=8 * 1024 * 1024,
                max_batch_size=PRODUCER_BATCH_BYTES,
                **client_settings(s.embedded_broker, self._client, kind="producer"),
            )
            await self._producer.start()
        except KafkaError as exc:
            raise BrokerError(f"cannot reach the broker at {mask_url(s.broker)}: {exc}") from exc
        self._store = ChangelogStore(
            data_dir=s.data_dir / app.name,
            changelog_topic=app.changelog_topic,
            bootstrap=self._bootstrap,
            client_kwargs=client_settings(s.embedded_broker, self._client, kind="consumer"),
            producer=self._producer,
            hold=held if self._exactly_once else None,
        )
        await self._store.start()
        self._key_state = ChangelogKeyState(self._store)
        self._action_states = ChangelogActionStateStore(self._store)
        if app.event_log is not None:
            self._event_logger = create_event_logger(app.event_log)
            self._event_logger.open()
        if self._exactly_once:
            self._transactions = Transactions(app.name, self._transactional_producer)
        self._output = output = KafkaOutput(
            app,
            self._producer,
            self._in_codec,
            codec_for(s.output_codec),
            self.metrics,
            self._event_logger,
            self._fail,
            self._transactions,
            EmittedOutputs(self._store) if self._exactly_once else None,
        )
        self._operator = Operator(
            app.agent,
            key_state=self._key_state,
            action_states=self._action_states,
            output=output,
            router=output,
            event_logger=self._event_logger,
            metrics=self.metrics,
            on_error=output.on_error,
            on_fatal=self._fail,
            max_concurrency=s.max_concurrency,
            executor=self._executor,
            barrier=self._store.flush,
            per_partition=True,
            action_timeout_s=s.action_timeout_s,
            max_events_per_input=s.max_events_per_input,
        )
        consumer_settings = client_settings(
            s.embedded_broker,
            {**self._client, "fetch_max_wait_ms": s.fetch_wait_ms},
            kind="consumer",
        )
        if self._exactly_once:  # routed events and inputs of aborted transactions: never
            consumer_settings["isolation_level"] = "read_committed"
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=app.name,
            client_id=client_id(app.name, s.web_port),  # how other workers find our /keys
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Range while every worker's topics have the same count, and still co-partitioned
            # while the input topic runs ahead of the others (a migration's first moments).
            partition_assignment_strategy=(CoPartitionedAssignor, RangePartitionAssignor),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # A changed partition count is noticed within this (aiokafka's default is 5 min).
            metadata_max_age_ms=15_000,
            **consumer_settings,
        )
        self._consumer.subscribe(
            [app.input_topic, app.internal_topic], listener=PartitionListener(self)
        )
        try:
            await self._consumer.start()
        except InvalidSessionTimeoutError as exc:  # Kafka: under group.min.session.timeout.ms
            await self.stop()
            raise ConfigurationError(session_refused(s.embedded_broker, s.broker)) from exc
        self._broker_watch = BrokerWatch(
            self._producer.client, self.metrics, s.broker_unreachable_grace_s
        )
        self._tasks = [
            asyncio.create_task(self._consume_loop(), name="agentstream-consume"),
            asyncio.create_task(self._commit_loop(), name="agentstream-commit"),
            asyncio.create_task(self._lag_loop(), name="agentstream-lag"),
            asyncio.create_task(self._broker_watch.run(), name="agentstream-broker-check"),
        ]
        log.info("worker of %s started on %s", app.name, mask_url(s.broker))

    async def run(self) -> None:
        """Start, run until stopped (SIGTERM/SIGINT or :meth:`stop`), then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopped.set)
        await self.start()
        try:
            waiters = [asyncio.create_task(self.stopped.wait()), *self._tasks]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
        finally:
            await self.stop()
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        self.stopped.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._operator is not None:
            await self._operator.cancel(lambda record: True)
        with contextlib.suppress(Exception):
            if self._consumer is not None and self._store is not None:
                await self._commit()
        if self._transactions is not None:
            await self._transactions.stop(None, abort=True)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._store is not None:
            with contextlib.suppress(Exception):
                await self._store.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._event_logger is not None:
            self._event_logger.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- consuming ---------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        try:
            while not self.stopped.is_set():
                await self.ready.wait()  # no records while partitions are being recovered
                if self._to_reset or (
                    self._fenced and min(self._fenced.values()) <= time.monotonic()
                ):
                    await self._reset()
                    continue
                room = self._apply_backpressure()
                batch = await self._consumer.getmany(
                    timeout_ms=self.settings.fetch_wait_ms * 4, max_records=room
                )
                for tp, messages in batch.items():
                    handle = (
                        self._on_input_message
                        if tp.topic == self.app.input_topic
                        else self._on_internal_message
                    )
                    for message in messages:
                        if tp.partition not in self._assigned:
                            # The fetcher ran ahead of a rebalance. If the partition is (being)
                            # assigned to us, read this record again once its state is
                            # recovered; if it was revoked, its new owner reads it.
                            if tp in self._consumer.assignment():
                                self._consumer.seek(tp, message.offset)
                            break
                        await handle(message)
                        if tp.partition not in self._assigned or (
                            self._migration.stopped and tp in self._migration.stopped
                        ):
                            break  # revoked while it waited, or the input topic grew
                        self._positions[tp] = message.offset + 1
                if self._migration.active:
                    await self._migration.tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("worker failed")
            self.error = exc
            self.stopped.set()

    def _apply_backpressure(self) -> int:
        """Pause the input partitions over their share of the buffered inputs (see
        :mod:`agentstream.service.backpressure`); returns how many records the next fetch
        may take. Only the input topic pauses: the internal topic must keep flowing, since
        the inputs in flight finish by consuming it."""
        consumer = self._consumer
        assert consumer is not None
        limit, total = self.settings.max_buffered_inputs, self.operator.inputs_in_flight
        inputs = [  # those owned, and not stopped by a migration (not ours to resume)
            tp
            for tp in consumer.assignment()
            if tp.topic == self.app.input_topic
            and tp.partition in self._assigned
            and tp not in self._migration.stopped
        ]

        def backlog(tp: TopicPartition) -> bool:
            end, position = consumer.highwater(tp), self.position(tp)
            return end is None or position is None or end > position

        over, room = over_share(limit, total, self.operator.partition_inputs, inputs, backlog)
        if over != self._paused:
            consumer.resume(*(self._paused - over).intersection(inputs))
            consumer.pause(*(over - self._paused))
            self._paused = over
        return room

    async def _on_input_message(self, message: Any) -> None:
        migration = self._migration
        if migration.watching and not migration.settled(message) and await migration.takes(message):
            return  # held until its key's state arrives, or sent to the key's partition
        await self._admit(message)

    async def _admit(self, message: Any, ident: str | None = None) -> None:
        """Decode an input record and hand it to the operator (``ident``: the id of a
        record forwarded from another partition, which has no offset here)."""
        if message.partition not in self._assigned:
            return  # revoked while the migration waited on the broker: its new owner reads it
        try:
            value = self._in_codec.decode(message.value) if message.value is not None else None
        except Exception as exc:
            await self._undecodable(message, exc)
            return
        key = decode_key(message.key)
        if key is not None and not self._migration.active:  # keys move in a migration
            self._spread.note(key, message.partition)
        self.operator.on_input(
            InputRecord(
                key=key,
                value=value,
                id=ident or input_id(message),
                timestamp=message.timestamp,
                partition=message.partition,
                offset=message.offset,
            )
        )

    async def _undecodable(self, message: Any, exc: Exception) -> None:
        assert self._output is not None
        try:
            await self._output.undecodable(message, exc)
        except PartitionLost as lost:  # read again once the partition is reset
            log.info("dead letter of %s not sent: %s", input_id(message), lost)

    async def _on_internal_message(self, message: Any) -> None:
        try:
            decoded = loads(message.value)
            control = type(decoded[0]) is str and decoded[0][:1] == "\x00"
            if not control:
                tag, sender, packed = decoded
                event = unpack_event(packed)
        except Exception as exc:
            await self._undecodable(message, exc)
            return
        if control:  # keys moving between partitions: agentstream.service.migration
            await self._migration.on_control(message, decoded)
            return
        slot = (message.partition, decode_key(message.key))
        await self.operator.on_routed_event(slot, tag, event, sender)

    def _fail(self, error: BaseException) -> None:
        """Stop the worker with ``error`` (error_policy=fail, or a key's runner failed)."""
        if self.error is None:
            self.error = error
        self.stopped.set()
