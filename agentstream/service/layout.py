"""The app's key layout: over how many partitions its keys and their state are spread.

Kafka's default partitioner puts a key on ``murmur2(key) % partitions``, so adding input
partitions moves keys. The layout says which count the app's state follows and, while a
migration runs, the one it follows next. It lives in ``<app>-layout`` (compacted, one
partition), written only when a migration begins and as partitions finish their part::

    layout/<M>/<writer>  {"partitions": M, "previous": N, "fences": [end of input p, ...]}
    moved/<M>/<q>        partition q finished its part of the migration to M

Two workers may both begin the same migration: the first ``layout/<M>/*`` record (lowest
offset) wins for everyone, so the fences are the same everywhere. No record at all means
no migration ever ran: the app is at its changelog topic's partition count.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewPartitions
from aiokafka.partitioner import murmur2

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.serde import dumps, loads
from agentstream.service.broker import admin_client, client_settings

if TYPE_CHECKING:
    from agentstream.service.app import AgentApp

__all__ = [
    "Layout",
    "begin_migration",
    "fewer_partitions",
    "grow_topics",
    "layout_topic",
    "mark_moved",
    "partition_for",
    "read_layout",
    "topic_counts",
]

log = logging.getLogger(__name__)


def layout_topic(app_name: str) -> str:
    """The app's layout topic (compacted, one partition)."""
    return f"{app_name}-layout"


def partition_for(key: bytes, count: int) -> int:
    """The partition Kafka's default partitioner (Java client, aiokafka) picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % count


@dataclass(frozen=True)
class Layout:
    """The key layout the app is at, or moving to.

    Attributes:
        partitions: the layout the app is at or moving to.
        previous: the layout before (== ``partitions`` when no migration is under way or
            none ever ran).
        fences: per input partition of the previous layout, its end offset when the
            migration began: its records before it follow the previous layout.
        moved: the partitions that finished their part of the migration to ``partitions``.
    """

    partitions: int
    previous: int
    fences: tuple[int, ...] = ()
    moved: frozenset[int] = frozenset()

    @classmethod
    def steady(cls, partitions: int) -> Layout:
        return cls(partitions, partitions, (), frozenset(range(partitions)))

    @property
    def migrating(self) -> bool:
        return self.previous != self.partitions and len(self.moved) < self.partitions

    def sources(self, partition: int) -> list[int]:
        """The previous layout's partitions whose keys may move to ``partition``."""
        n, m = self.previous, self.partitions
        lcm = n * m // math.gcd(n, m)
        return sorted({h % n for h in range(partition, lcm, m)} - {partition})

    def destinations(self, partition: int) -> list[int]:
        """The partitions that keys of ``partition`` (previous layout) may move to."""
        return [q for q in range(self.partitions) if partition in self.sources(q)]


async def topic_counts(
    bootstrap: str, client_kwargs: Mapping[str, Any], topics: Iterable[str]
) -> dict[str, int]:
    """The partition count of each of ``topics`` that exists (a metadata request for all
    topics: naming them would auto-create them where the broker does that)."""
    wanted = set(topics)
    async with admin_client(bootstrap, client_kwargs) as admin:
        described = await admin.describe_topics(None)
    return {
        t["topic"]: len(t["partitions"])
        for t in described
        if t["topic"] in wanted and not t.get("error_code") and t["partitions"]
    }


async def grow_topics(
    bootstrap: str, client_kwargs: Mapping[str, Any], counts: Mapping[str, int]
) -> None:
    """Raise each topic to its partition count (a topic already there is left as it is)."""
    current = await topic_counts(bootstrap, client_kwargs, counts)
    grow = {t: n for t, n in counts.items() if current.get(t, n) < n}
    if not grow:
        return
    async with admin_client(bootstrap, client_kwargs) as admin:
        response = await admin.create_partitions({t: NewPartitions(n) for t, n in grow.items()})
    for topic, code, message in response.topic_errors:
        if code == 37 and "already has" in (message or ""):  # INVALID_PARTITIONS: a race
            continue
        if code:
            raise BrokerError(f"cannot add partitions to {topic!r}: {message} (error {code})")
    log.info("topics grown: %s", ", ".join(f"{t} to {n}" for t, n in sorted(grow.items())))


async def read_layout(
    bootstrap: str, client_kwargs: Mapping[str, Any], app_name: str
) -> Layout | None:
    """The app's recorded layout; None when no migration ever began."""
    topic = layout_topic(app_name)
    if topic not in await topic_counts(bootstrap, client_kwargs, [topic]):
        return None
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        **client_settings(False, {**client_kwargs, "fetch_max_wait_ms": 50}, kind="consumer"),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, start)
        records: list[tuple[str, Any]] = []
        while start < end and await consumer.position(tp) < end:
            for message in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if message.key is not None and message.value is not None:
                    records.append((message.key.decode(), loads(message.value)))
    finally:
        await consumer.stop()
    return _layout_of(records)


def _layout_of(records: list[tuple[str, Any]]) -> Layout | None:
    begun: dict[int, dict[str, Any]] = {}
    moved: dict[int, set[int]] = {}
    for key, value in records:
        kind, _, rest = key.partition("/")
        if kind == "layout":
            target = int(rest.split("/", 1)[0])
            begun.setdefault(target, value)  # the first record of a migration wins
        elif kind == "moved":
            target_s, _, partition = rest.partition("/")
            moved.setdefault(int(target_s), set()).add(int(partition))
    if not begun:
        return None
    target = max(begun)
    value = begun[target]
    return Layout(
        partitions=int(value["partitions"]),
        previous=int(value["previous"]),
        fences=tuple(int(f) for f in value["fences"]),
        moved=frozenset(moved.get(target, ())),
    )


async def begin_migration(
    producer: AIOKafkaProducer,
    bootstrap: str,
    client_kwargs: Mapping[str, Any],
    app_name: str,
    previous: int,
    partitions: int,
    fences: list[int],
    replication_factor: int,
) -> Layout:
    """Record that the app's keys move from ``previous`` to ``partitions`` partitions;
    returns the layout that wins (another worker's, if it began first)."""
    from agentstream.service.broker import ensure_topics

    if partitions <= previous:
        raise ConfigurationError(f"a migration from {previous} to {partitions} partitions")
    topic = layout_topic(app_name)
    await ensure_topics(
        bootstrap,
        {topic: 1},
        replication_factor=replication_factor,
        client_kwargs=client_kwargs,
        topic_configs={topic: {"cleanup.policy": "compact"}},
    )
    value = {"partitions": partitions, "previous": previous, "fences": fences}
    key = f"layout/{partitions}/{uuid.uuid4().hex[:12]}"
    await producer.send_and_wait(topic, dumps(value), key=key.encode(), partition=0)
    layout = await read_layout(bootstrap, client_kwargs, app_name)
    assert layout is not None
    return layout


async def mark_moved(producer: AIOKafkaProducer, app_name: str, layout: Layout, q: int) -> None:
    """Record that partition ``q`` finished its part of the migration to ``layout``."""
    key = f"moved/{layout.partitions}/{q}"
    await producer.send_and_wait(layout_topic(app_name), b"\x90", key=key.encode(), partition=0)


def fewer_partitions(app: AgentApp, count: int, layout: Layout) -> ConfigurationError:
    return ConfigurationError(
        f"the input topic {app.input_topic!r} has {count} partitions, but the state of app "
        f"{app.name!r} is spread over {layout.partitions}: Kafka cannot shrink a topic, so "
        f"it was recreated. Recreate it with {layout.partitions} partitions (or more: the "
        f"app then moves its keys), or start the app afresh without its state: delete the "
        f"topics {app.internal_topic}, {app.changelog_topic} and {app.layout_topic}, the "
        f"consumer group {app.name} and the workers' data directories"
    )
