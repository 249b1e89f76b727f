"""Moving keys, with their state and order, when the input topic gains partitions.

Design note (a handoff through the internal topic, coordinated by the layout topic)::

    someone adds input partitions: N -> M
    the worker owning input 0 notices (a rebalance, within the metadata refresh) and
      begins: fences = the end of every input partition p < N  ─► <app>-layout
      grows the internal events and changelog topics to M     ─► a rebalance
    every partition q of the new layout, in its owner (a status in its store):
      source (q < N): records before fence[q] follow the old layout; at the fence, the
        keys that leave (murmur2(key) % M != q) are cancelled and handed over: each key's
        record, memory and current input's action runs ─► internal[dest] ("handoff"),
        then "done from q" ─► internal[d] for every d that q's keys may move to
      destination: a key arriving from source p is held (its inputs, direct or
        forwarded, wait in order) until "done from p"; then its imported input resumes
        (completed actions replay), then the forwarded inputs, then the direct ones
      q has moved when it is split and every source is done ─► moved/<M>/<q>
    records that land on a key's old partition after the fence (producers with stale
      metadata) are forwarded to the key's partition ("forward") and counted

This module decides (who begins, which partitions are taken, what each record is); the
handing over itself is in :mod:`agentstream.service.handoff`.

Why the order holds: a producer that switched wrote its older records before the switch,
so before the fence of the old partition (the fences are taken once every worker has
stopped), and those are processed by the old owner or travel in the key's handoff; its
newer records are on the new partition, held until the handoff is done. Everything a
handoff writes goes through the source's producer (its transaction under exactly-once),
and the destination's offsets are never committed past a record it holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final

from aiokafka import TopicPartition

from agentstream.serde import loads
from agentstream.service.codecs import encode_key
from agentstream.service.handoff import (
    _DONE,
    _FORWARD,
    _HANDOFF,
    _STATUS,
    Handoffs,
    KeyMoved,
    _Held,
    _Status,
)
from agentstream.service.layout import (
    Layout,
    begin_migration,
    fewer_partitions,
    grow_topics,
    partition_for,
    read_layout,
    topic_counts,
)

if TYPE_CHECKING:
    from agentstream.service.worker import Worker

__all__ = ["KeyMoved", "Migration"]

log = logging.getLogger(__name__)

_REFRESH_S: Final = 5.0
_CHECK_S: Final = 0.02  # how often a misplaced key may refresh the input topic's metadata
_CLOCK_MARGIN_S: Final = 1.0  # producers' clocks may be this far behind the worker's
_HOMES_CACHED: Final = 50_000


class Migration(Handoffs):
    """The worker's part in moving keys between partitions (see the module's note)."""

    def __init__(self, worker: Worker):
        super().__init__(worker)
        self.active = False  # a migration ran: records may need forwarding or holding
        self.watching = False  # keys are checked against the layout (not on Tansu)
        self.stopped: set[TopicPartition] = set()  # paused: the input topic grew
        self._homes: dict[bytes, int] = {}  # key -> partition in the layout (a cache)
        self._checked = 0.0  # when the input topic's metadata was last refreshed
        self._checked_at = 0.0  # the same, in wall-clock time
        self._refreshed = 0.0

    # -- the layout and the assignment ---------------------------------------------------

    async def read(self) -> Layout:
        """The app's layout (recorded, else its changelog topic's partition count)."""
        w = self._w
        app, kwargs = w.app, w._client
        recorded = await read_layout(w._bootstrap, kwargs, app.name)
        if recorded is not None:
            return recorded
        counts = await topic_counts(w._bootstrap, kwargs, [app.changelog_topic])
        return Layout.steady(counts.get(app.changelog_topic, w.settings.partitions))

    async def check(self, input_count: int) -> None:
        """Refuse to start on an input topic with fewer partitions than the app's state."""
        layout = await self.read()
        if input_count < layout.partitions:
            raise fewer_partitions(self._w.app, input_count, layout)

    async def plan(self, parts: set[int]) -> set[int] | None:
        """The input partitions of ``parts`` whose state to take now; None: none, until
        the rebalance that follows a migration's beginning."""
        w = self._w
        assert w._consumer is not None and w._producer is not None
        layout = await self.read()
        # The broker's count: this member's metadata may not show what the leader saw.
        counts = await topic_counts(w._bootstrap, w._client, [w.app.input_topic])
        count = max(counts.get(w.app.input_topic, 0), w.input_partitions(), max(parts) + 1)
        if count < layout.partitions:
            w._fail(fewer_partitions(w.app, count, layout))
            return None
        if count > layout.partitions and not layout.migrating:
            if 0 not in parts:
                log.info(
                    "input topic grew to %d partitions; its partition 0's owner moves the keys",
                    count,
                )
                return None
            tps = [TopicPartition(w.app.input_topic, p) for p in range(layout.partitions)]
            ends = await w._consumer.end_offsets(tps)
            layout = await begin_migration(
                w._producer,
                w._bootstrap,
                w._client,
                w.app.name,
                layout.partitions,
                count,
                [ends[tp] for tp in tps],
                w.settings.replication_factor,
            )
            log.info(
                "input topic grew: moving keys from %d to %d partitions",
                layout.previous,
                layout.partitions,
            )
        elif count > layout.partitions:
            log.warning(
                "input topic grew to %d partitions while keys move from %d to %d: "
                "its partitions from %d on wait until then",
                count,
                layout.previous,
                layout.partitions,
                layout.partitions,
            )
        if layout.previous != layout.partitions:
            m = layout.partitions
            topics = [w.app.internal_topic, w.app.changelog_topic]
            counts = await topic_counts(w._bootstrap, w._client, topics)
            if min(counts.get(t, 0) for t in topics) < m:
                await grow_topics(w._bootstrap, w._client, dict.fromkeys(topics, m))
                w._consumer._client.force_metadata_update()
                return None
            await w._producer.client.force_metadata_update()
        self.layout = layout
        self.active = layout.previous != layout.partitions
        self.watching = True
        self._homes.clear()
        self.stopped.clear()
        w.metrics.migration_in_progress.set(1 if layout.migrating else 0)
        return {p for p in parts if p < layout.partitions}

    def assigned(self, parts: set[int]) -> None:
        """Read the migration status of the partitions now owned (their state recovered)."""
        layout = self.layout
        if layout is None or not self.active:
            return
        store = self._w.store
        for q in parts:
            raw = store.get(q, _STATUS)
            status = _Status(layout.partitions)
            if raw is not None:
                saved = loads(raw)
                if saved["partitions"] == layout.partitions:
                    status = _Status(
                        layout.partitions, saved["split"], set(saved["arrived"]), saved["done"]
                    )
            if not layout.migrating:  # every partition has moved
                status.split = status.done = True
            if q >= layout.previous:
                status.split = True  # a new partition: no keys of the old layout
            self._status[q] = status
            self._held[q] = {}
            self._to_move[q] = 0 if status.split else len(self._leaving(q))
        self._count_to_move()

    def forget(self, parts: set[int]) -> None:
        self.stopped = {tp for tp in self.stopped if tp.partition not in parts}
        for q in parts:
            self._splitting.pop(q, None)
            self._outbox.pop(q, None)
            self._status.pop(q, None)
            self._held.pop(q, None)
            self._to_move.pop(q, None)
        self._count_to_move()

    def resumable(self, slot: Any) -> bool:
        """Whether a key's input in flight may resume here now (not a key whose handoff
        is still under way: its inputs wait for the handoff's end)."""
        q, key = slot
        status = self._status.get(q)
        if status is None or status.done or key is None:
            return True
        assert self.layout is not None
        source = partition_for(encode_key(key) or b"", self.layout.previous)
        return source == q or source in status.arrived

    # -- records --------------------------------------------------------------------------

    def settled(self, message: Any) -> bool:
        """Whether an input record is processed here at once (the common case, checked
        without a coroutine): no key, or no migration on its partition and its key's
        partition in the layout is this one."""
        raw_key = message.key
        if raw_key is None:
            return True
        status = self._status.get(message.partition)
        if status is not None and not status.done:
            return False
        return self._homes.get(raw_key) == message.partition

    async def takes(self, message: Any) -> bool:
        """Whether an input record is forwarded or held instead of processed here now.

        By its key's partition in the old layout (``home``) and the new one: a key that
        stays is processed; a key that leaves is processed up to the fence (its records
        from before its producers switched), then handed over and its records forwarded;
        a key that arrives is held until its home's handoff is done (wherever its record
        is, before the fence or after: a producer may switch before the fence is taken).
        A key that neither layout puts here (another partitioner) is processed here.
        """
        raw_key = message.key
        if raw_key is None:
            return False
        q = message.partition
        layout = self.layout
        assert layout is not None
        destination = self._homes.get(raw_key)
        if destination is None:
            destination = partition_for(raw_key, layout.partitions)
            if len(self._homes) >= _HOMES_CACHED:
                self._homes.clear()
            self._homes[raw_key] = destination
        status = self._status.get(q)
        if status is None or status.done:  # no migration here (any more)
            if destination == q:
                return False
            if await self._grew(message):
                return True
            if self.active and partition_for(raw_key, layout.previous) == q:
                await self._forward(message, destination, stale=True)
                return True
            return False
        home = partition_for(raw_key, layout.previous)
        if destination == q:
            if home == q or home in status.arrived:
                return False
            self._held[q].setdefault(home, _Held()).direct.append(message)
            return True
        if home != q:
            return False
        old = message.offset < layout.fences[q]
        if not status.split:
            if old:
                return False
            self._start_split(q)  # at the fence: the key's records wait for its handoff
            self._outbox.setdefault(q, []).append(message)
            return True
        await self._forward(message, destination, stale=not old)
        return True

    async def _grew(self, message: Any) -> bool:
        """A record whose key the layout puts on another partition: from a producer that
        saw more partitions than the app, stop reading the partition (True) until the
        rebalance that moves the keys; else (False) it is a stale producer's, or one with
        another partitioner's.

        The input topic's metadata is refreshed unless the last refresh began after the
        record was written (its timestamp, less a margin for clocks): a refresh that old
        may miss the new partitions its producer saw.
        """
        w = self._w
        assert w._consumer is not None and self.layout is not None
        topic = w.app.input_topic
        written = message.timestamp / 1000 if message.timestamp is not None else time.time()
        if self._checked_at <= written + _CLOCK_MARGIN_S:
            wait = self._checked + _CHECK_S - time.monotonic()
            if wait > 0:  # metadata requests at most this often
                await asyncio.sleep(wait)
            self._checked, self._checked_at = time.monotonic(), time.time()
            await w._consumer._client.force_metadata_update()
            if message.partition not in w._assigned:
                return True  # revoked meanwhile: its new owner reads the record
        if len(w._consumer.partitions_for_topic(topic) or ()) <= self.layout.partitions:
            return False
        tp = TopicPartition(topic, message.partition)
        w._consumer.seek(tp, message.offset)
        w._consumer.pause(tp)
        if tp not in self.stopped:
            log.info(
                "input partition %d: a record of the grown input topic; waiting for the "
                "rebalance that moves the keys",
                message.partition,
            )
        self.stopped.add(tp)
        return True

    async def on_control(self, message: Any, decoded: list[Any]) -> None:
        """A handoff, the end of a source's handoffs, or a forwarded input, for partition
        ``message.partition``."""
        q, kind = message.partition, decoded[0]
        status = self._status.get(q)
        if kind == _FORWARD:
            _, _source, ident, raw_key, value, timestamp = decoded
            forwarded = SimpleNamespace(
                topic=self._w.app.input_topic,
                partition=q,
                offset=None,
                key=raw_key,
                value=value,
                timestamp=timestamp,
                headers=(),
            )
            if status is not None and not status.done and self.layout is not None:
                source = partition_for(raw_key, self.layout.previous)
                if source != q and source not in status.arrived:
                    held = self._held[q].setdefault(source, _Held())
                    held.forwarded.append((message.offset, forwarded, ident))
                    return
            await self._w._admit(forwarded, ident)
            return
        source, partitions = decoded[1], decoded[2]
        if status is None or status.partitions != partitions or source in status.arrived:
            return  # a repeat (a source that crashed mid-handoff), or an old migration's
        if kind == _HANDOFF:
            entries = [(bytes(k), bytes(v)) for k, v in decoded[3]]
            key = next(loads(k[1:]) for k, _ in entries if k[:1] == b"k")
            w = self._w
            assert w._key_state is not None and w._action_states is not None
            w._key_state.adopt((q, key), entries, w._action_states)
            return
        if kind == _DONE:
            status.arrived.add(source)
            self._save(q)
            await self._release(q, source)
            await self._finish(q)

    async def tick(self) -> None:
        """Split the sources whose fence is reached; report progress now and then."""
        w = self._w
        layout = self.layout
        if layout is None:
            return
        for q, status in list(self._status.items()):
            if not status.split:
                if q not in self._splitting:
                    tp = TopicPartition(w.app.input_topic, q)
                    position = w._positions.get(tp)
                    if position is None:
                        assert w._consumer is not None
                        position = await w._consumer.position(tp)
                    if position >= layout.fences[q] and q in self._status:
                        self._start_split(q)
                if q in self._splitting and self._drained(q):
                    await self._split(q)
            elif not status.done:
                await self._finish(q)
        now = time.monotonic()
        if layout.migrating and now - self._refreshed >= _REFRESH_S:
            self._refreshed = now
            self.layout = await self.read()
            w.metrics.migration_in_progress.set(1 if self.layout.migrating else 0)
