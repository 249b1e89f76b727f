"""Reading topics for ``agentstream tail`` and ``dead-letters``: where to start
(``--from-beginning``, ``--offset``, ``--since``), which records (``--partition``,
``--key``), decoded with the topic's codec. Kafka errors are translated at this boundary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.errors import ConfigurationError
from agentstream.service.app import AgentApp
from agentstream.service.broker import client_settings
from agentstream.service.client import (
    Connection,
    UnknownTopic,
    _connected,
    _start,
    topic_partitions,
)
from agentstream.service.codecs import Codec, codec_for, decode_key

__all__ = ["Record", "follow", "parse_since", "read_records"]


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> int:
    """A point in time as ms since the epoch: ``10m``/``2h``/``1d`` ago, an ISO 8601 time
    (UTC unless it says otherwise), or ms since the epoch."""
    text = text.strip()
    current = time.time() if now is None else now
    relative = _RELATIVE.match(text)
    if relative:
        return int((current - float(relative[1]) * _UNIT_S[relative[2]]) * 1000)
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"cannot read the time {text!r}: give 10m, 2h, 1d (ago), an ISO time like "
            "2026-01-31T12:00:00Z, or ms since the epoch"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Record:
    """A consumed record, decoded for display."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Any
    value: Any
    raw_value: bytes | None
    headers: dict[str, str]

    def as_json(self, form: str) -> str:
        """``value`` (the value alone: text as is), ``json`` (key and value) or ``full``."""
        if form == "value":
            if isinstance(self.value, str):
                return self.value
            return json.dumps(self.value, ensure_ascii=False)
        data: dict[str, Any] = {"key": self.key, "value": self.value}
        if form == "full":
            data = {
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "timestamp": self.timestamp,
                **data,
                "headers": self.headers,
            }
        return json.dumps(data, ensure_ascii=False, default=repr)


def _decode(codec: Codec | None, data: bytes | None) -> Any:
    """With a codec, its value; without one, JSON if it is JSON, else text, else repr."""
    if data is None:
        return None
    if codec is not None:
        with contextlib.suppress(Exception):
            return codec.decode(data)
        return repr(data)
    with contextlib.suppress(ValueError):
        return json.loads(data)
    try:
        return data.decode()
    except UnicodeDecodeError:
        return repr(data)


async def read_records(
    conn: Connection,
    topic: str,
    *,
    codec: Codec | None = None,
    partitions: Sequence[int] | None = None,
    start: str = "beginning",
    offset: int | None = None,
    since_ms: int | None = None,
    key: str | None = None,
    follow: bool = True,
    idle_timeout_s: float | None = None,
    limit: int | None = None,
) -> AsyncGenerator[Record, None]:
    """Records of ``topic`` (no consumer group: nothing is committed).

    Args:
        partitions: only these (default: all).
        start: ``"beginning"`` or ``"end"`` (new records only); ``offset`` (>= 0: that
            offset; < 0: that many before the end) and ``since_ms`` override it.
        key: only records with this key.
        follow: keep waiting for new records; False stops at the end as of the start.
        idle_timeout_s: stop after this long without a record.
        limit: stop after this many records.

    Close it when done early (``contextlib.aclosing``): its consumer stops then.
    """
    layout = await topic_partitions(conn)
    if topic not in layout:
        raise UnknownTopic(topic, layout)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=conn.bootstrap,
        enable_auto_commit=False,
        **client_settings(
            conn.embedded, {**conn.client_kwargs, "fetch_max_wait_ms": 50}, kind="consumer"
        ),
    )
    async with _connected(conn, f"read {topic!r}"):
        await _start(consumer)
        try:
            known = layout[topic]
            chosen = list(partitions) if partitions else known
            unknown = sorted(set(chosen) - set(known))
            if unknown:
                raise ConfigurationError(f"topic {topic!r} has partitions {known}, not {unknown}")
            tps = [TopicPartition(topic, p) for p in chosen]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await _seek(consumer, tps, ends, start, offset, since_ms)
            records = _records(consumer, tps, ends, codec, key, follow, idle_timeout_s)
            async with contextlib.aclosing(records):
                shown = 0
                async for record in records:
                    # Filtered here too: not every broker answers a time lookup exactly
                    # (the embedded one answers the first offset for a time after every
                    # record).
                    if since_ms is not None and record.timestamp < since_ms:
                        continue
                    yield record
                    shown += 1
                    if limit is not None and shown >= limit:
                        return
        finally:
            await consumer.stop()


async def _seek(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    ends: dict[TopicPartition, int],
    start: str,
    offset: int | None,
    since_ms: int | None,
) -> None:
    if since_ms is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            at = found.get(tp)
            consumer.seek(tp, ends[tp] if at is None else at.offset)
        return
    # Explicit offsets, never a lazy reset (seek_to_beginning): a position asked for
    # before the reset resolved came back as the end on a real Kafka.
    starts = await consumer.beginning_offsets(tps)
    for tp in tps:
        if offset is not None:
            wanted = offset if offset >= 0 else ends[tp] + offset
            consumer.seek(tp, min(max(wanted, starts[tp]), ends[tp]))
        else:
            consumer.seek(tp, ends[tp] if start == "end" else starts[tp])


async def _records(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    ends: dict[TopicPartition, int],
    codec: Codec | None,
    key: str | None,
    follow: bool,
    idle_timeout_s: float | None,
) -> AsyncGenerator[Record, None]:
    idle_since: float | None = None  # caught up with the end, and nothing came since
    while True:
        if not follow and await _all_read(consumer, tps, ends):
            return
        batch = await consumer.getmany(*tps, timeout_ms=200)
        if not batch:
            if idle_timeout_s is not None:
                # Idle means read to the end: records not fetched yet (a slow first
                # fetch) do not count as silence.
                if not await _all_read(consumer, tps, ends):
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_timeout_s:
                    return
            continue
        idle_since = None
        for messages in batch.values():
            for m in messages:
                record_key = decode_key(m.key)
                if key is not None and record_key != key:
                    continue
                yield Record(
                    m.topic,
                    m.partition,
                    m.offset,
                    m.timestamp,
                    record_key,
                    _decode(codec, m.value),
                    m.value,
                    {k: v.decode(errors="replace") for k, v in m.headers},
                )


async def _all_read(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[Any, int]
) -> bool:
    """Whether every partition is read to its end: the high watermark of the last fetch
    (ListOffsets undercounts on the embedded broker), else the end listed at the start."""
    for tp in tps:
        highwater = consumer.highwater(tp)
        end = ends[tp] if highwater is None else max(highwater, ends[tp])
        if await consumer.position(tp) < end:
            return False
    return True


async def follow(
    app: AgentApp,
    show: Callable[[dict[str, Any]], None],
    *,
    topic: str | None = None,
    from_beginning: bool = True,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
) -> int:
    """Show records of the app's output topic (or ``topic``); returns how many."""
    shown = 0
    if max_records is not None and max_records <= 0:
        return 0
    records = read_records(
        Connection.of(app),
        topic or app.output_topic,
        codec=codec_for(app.settings.output_codec),
        start="beginning" if from_beginning else "end",
        idle_timeout_s=idle_timeout_s,
        limit=max_records,
    )
    async with contextlib.aclosing(records):
        async for record in records:
            shown += 1
            show(
                {
                    "key": record.key,
                    "value": record.value,
                    "timestamp": record.timestamp,
                    "headers": record.headers,
                }
            )
    return shown
