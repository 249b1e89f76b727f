"""What a worker writes to Kafka: outputs, routed events and dead letters.

:class:`KafkaOutput` owns the producer's use, the output codec and the dead-letter topic;
it is the operator's :class:`~agentstream.runtime.ports.OutputSink`, its
:class:`~agentstream.runtime.ports.EventRouter` and its error policy (dead-letter, or stop
the worker under ``error_policy="fail"``). Kafka errors are translated at this boundary.

Under exactly-once every record goes through the transaction of the input partition it
comes from (:mod:`agentstream.service.transactions`), and an output already sent for the
key's current input (recorded in that transaction) is not sent again by a replay.

Dead-letter records carry the input's original key and value and these headers::

    agentstream-reason           decode | encode | action | timeout | event-limit | send
    agentstream-error-type       module.QualName of the exception
    agentstream-error-message    its message (at most 4 KiB)
    agentstream-error-location   file:line of the innermost frame of the user's code
    agentstream-error-traceback  the traceback (at most 8 KiB, the end kept)
    agentstream-action, agentstream-event-id, agentstream-seq          when known
    agentstream-source-topic, -partition, -offset                     where it came from
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from agentstream.api.events import Event, OutputEvent
from agentstream.api.ids import qualified_name
from agentstream.errors import ActionExecutionError
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.observability.tracebacks import format_error, user_frame
from agentstream.runtime.records import InputRecord
from agentstream.serde import dumps
from agentstream.service.app import AgentApp
from agentstream.service.codecs import Codec, decode_key, encode_key
from agentstream.service.kafka_errors import kafka_errors
from agentstream.service.transactions import EmittedOutputs, PartitionLost, PartitionTransaction

__all__ = [
    "HEADER_EVENT_ID",
    "HEADER_WATERMARK",
    "NO_WATERMARK",
    "PRODUCER_BATCH_BYTES",
    "DeadLettered",
    "KafkaOutput",
]

log = logging.getLogger(__name__)

HEADER_EVENT_ID = "agentstream-event-id"
HEADER_WATERMARK = "agentstream-watermark"
NO_WATERMARK = -(2**63)
"""Watermark header value before any input of the partition has finished (Flink's)."""
PRODUCER_BATCH_BYTES = 512 * 1024
"""The producers' batch size per partition (aiokafka's default is 16 KiB).

An aiokafka producer has one produce request in flight per broker, holding at most one
batch per partition, so this bounds what a partition's changelog, outputs and routed events
move per round trip. At 16 KiB a flush of a thousand key records took tens of round trips,
and senders finding the batch full all waited for its drain and all woke at once. Below
Kafka's default ``message.max.bytes`` (1 MiB).
"""


class DeadLettered(Event):
    """The event-log record of a record or action sent to the dead-letter topic."""

    reason: str
    error_type: str
    error_message: str
    source: str | None = None
    location: str | None = None


def _h(value: Any) -> bytes:
    return str(value).encode()


class KafkaOutput:
    """The operator's sink, router and error policy on a Kafka producer.

    Args:
        app: the app (its topics and settings).
        producer: a started producer (owned by the worker, which starts and stops it).
        in_codec: the input codec (a dead letter carries the input re-encoded).
        out_codec: the output codec.
        metrics: where dead letters are counted.
        event_logger: receives a record per dead letter.
        stop: called with the error under ``error_policy="fail"`` (the worker stops).
        transactions: exactly-once: the open transaction of an input partition (raises
            BrokerError for a partition not owned); None: ``producer`` sends everything.
        emitted: exactly-once: where the outputs sent per key's input are recorded.
    """

    def __init__(
        self,
        app: AgentApp,
        producer: AIOKafkaProducer,
        in_codec: Codec,
        out_codec: Codec,
        metrics: RuntimeMetrics,
        event_logger: EventLogger | None,
        stop: Callable[[BaseException], None],
        transactions: Callable[[int], PartitionTransaction] | None = None,
        emitted: EmittedOutputs | None = None,
    ):
        self._app = app
        self._producer = producer
        self._in_codec = in_codec
        self._out_codec = out_codec
        self._metrics = metrics
        self._event_logger = event_logger
        self._stop = stop
        self._fail = app.settings.error_policy == "fail"
        self._transactions = transactions
        self._emitted = emitted

    async def _send(
        self,
        source: int | None,
        topic: str,
        after: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue a record: under exactly-once in the transaction of the input partition it
        comes from (``source``), else plainly."""
        if self._transactions is None or source is None:
            future: asyncio.Future[RecordMetadata] = await self._producer.send(topic, **kwargs)
            if after is not None:
                after()
            return future
        return await self._transactions(source).send(topic, after, **kwargs)

    async def _delivered(self, source: int | None, delivery: asyncio.Future[Any]) -> None:
        if self._transactions is None or source is None:
            await delivery
        else:
            await self._transactions(source).delivered(delivery)

    # -- OutputSink and EventRouter ------------------------------------------------------

    async def emit(
        self, key: Any, event: OutputEvent, record: InputRecord, watermark: int | None
    ) -> None:
        try:
            value = self._out_codec.encode(event.output)
        except Exception as exc:
            await self.dead_letter(
                "encode", encode_key(key), None, exc, event_id=event.id, record=record
            )
            return
        headers = [
            (HEADER_EVENT_ID, _h(event.id)),
            (HEADER_WATERMARK, _h(NO_WATERMARK if watermark is None else watermark)),
        ]
        topic = self._app.output_topic
        after = None
        emitted = self._emitted
        if emitted is not None:
            partition, input_id = record.partition, record.id or f"{record.offset}"
            assert event.id is not None
            if emitted.sent(partition, key, input_id, event.id):
                return  # a replay: sent (and committed) by an earlier attempt

            def after() -> None:
                assert emitted is not None and event.id is not None
                emitted.note(partition, key, input_id, event.id)

        with kafka_errors("send an output", topic=topic):
            delivery = await self._send(
                record.partition,
                topic,
                after,
                value=value,
                key=encode_key(key),
                timestamp_ms=event.source_timestamp,
                headers=headers,
            )
            await self._delivered(record.partition, delivery)

    async def route(
        self, key: Any, tag: str, event: Event, packed: bytes, sender: str, record: InputRecord
    ) -> None:
        topic = self._app.internal_topic
        with kafka_errors("route an event", topic=topic):
            await self._send(
                record.partition,
                topic,
                value=dumps([tag, sender, packed]),
                key=encode_key(key),
                partition=record.partition,
                timestamp_ms=event.source_timestamp,
            )

    async def send_internal(
        self, source: int, partition: int, key: bytes | None, value: bytes
    ) -> None:
        """Send a record to the internal topic's ``partition`` on behalf of input partition
        ``source`` (in its transaction under exactly-once), and wait for it: a key's state
        and inputs moving to another partition (:mod:`agentstream.service.migration`)."""
        topic = self._app.internal_topic
        with kafka_errors("hand over to another partition", topic=topic):
            delivery = await self._send(source, topic, key=key, value=value, partition=partition)
            await self._delivered(source, delivery)

    # -- the error policy ------------------------------------------------------------------

    async def on_error(
        self, error: ActionExecutionError, event: Event, record: InputRecord
    ) -> None:
        """A step failed: dead-letter the input with the reason, or stop the worker."""
        if isinstance(error.cause, PartitionLost):  # not the input's fault: see PartitionLost
            log.info("key %r: %s; its partition is reset", record.key, error.cause)
            return
        if self._fail:
            log.error("stopping (error_policy=fail): %s", error, exc_info=error)
            self._stop(error)
            # The key's runner ends here, quietly: the error is logged (once) and the worker
            # stops with it; a restart processes the input again.
            raise asyncio.CancelledError
        try:
            original = self._in_codec.encode(record.value) if record.value is not None else None
        except Exception:
            original = None
        await self.dead_letter(
            error.reason,
            encode_key(record.key),
            original,
            error.cause,
            action=error.action,
            event_id=error.event_id,
            record=record,
            seq=error.seq,
            summary=str(error),
        )

    async def undecodable(self, message: Any, exc: Exception) -> None:
        """A record that could not be decoded: dead-letter it as it is (under either policy:
        no fix of the code makes it decodable, and it must not block its partition)."""
        await self.dead_letter(
            "decode",
            message.key,
            message.value,
            exc,
            source=(message.topic, message.partition, message.offset),
        )

    async def dead_letter(
        self,
        reason: str,
        key: bytes | None,
        value: bytes | None,
        exc: BaseException,
        *,
        source: tuple[str, int, int] | None = None,
        action: str | None = None,
        event_id: str | None = None,
        record: InputRecord | None = None,
        seq: int | None = None,
        summary: str | None = None,
    ) -> None:
        if record is not None and source is None:
            offset = -1 if record.offset is None else record.offset  # offset 0 is an offset
            source = (self._app.input_topic, record.partition, offset)
        error_type = qualified_name(type(exc))
        location = user_frame(exc)
        headers = [
            ("agentstream-reason", _h(reason)),
            ("agentstream-error-type", _h(error_type)),
            ("agentstream-error-message", _h(str(exc))[:4096]),
            ("agentstream-error-traceback", format_error(exc).encode()),
        ]
        if location is not None:
            headers.append(("agentstream-error-location", _h(location)))
        for name, item in (("action", action), ("event-id", event_id), ("seq", seq)):
            if item is not None:
                headers.append((f"agentstream-{name}", _h(item)))
        if source is not None:
            headers += [
                ("agentstream-source-topic", _h(source[0])),
                ("agentstream-source-partition", _h(source[1])),
                ("agentstream-source-offset", _h(source[2])),
            ]
        # The full traceback of the user's code, once per failure.
        log.warning(
            "dead-lettering (%s) key=%r at %s: %s",
            reason,
            key,
            location or "?",
            summary or f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        topic = self._app.dead_letter_topic
        with kafka_errors("send a dead letter", topic=topic):
            partition = None if source is None else source[1]
            delivery = await self._send(partition, topic, value=value, key=key, headers=headers)
            await self._delivered(partition, delivery)
        self._metrics.dead_letters.labels(reason=reason).inc()
        if self._event_logger is not None:
            self._event_logger.append(
                EventLogRecord(
                    time.time(),
                    decode_key(key),
                    -1 if seq is None else seq,
                    DeadLettered(
                        id=event_id,
                        reason=reason,
                        error_type=error_type,
                        error_message=str(exc),
                        source="/".join(map(str, source)) if source else None,
                        location=location,
                    ),
                    action,
                )
            )
