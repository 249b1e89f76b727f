"""Handing keys over between partitions: the sources' and destinations' side of a
migration (the design note is in :mod:`agentstream.service.migration`).

A source at its fence collects the leaving keys' newer records, lets their inputs in
flight finish (up to ``DRAIN_S``), then sends each key's stored entries, those records and
a "done" mark through the internal topic; a destination adopts the entries and, at the
mark, resumes the keys and releases the inputs it held for them. Each partition's part is
saved in its own state, so a crash resumes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from aiokafka import TopicPartition

from agentstream.api.events import Event
from agentstream.observability.eventlog import EventLogRecord
from agentstream.serde import dumps
from agentstream.service.codecs import encode_key
from agentstream.service.keys import input_id
from agentstream.service.layout import Layout, mark_moved, partition_for

if TYPE_CHECKING:
    from agentstream.service.worker import Worker

__all__ = ["DRAIN_S", "SPLIT_GRACE_S", "Handoffs", "KeyMoved"]

log = logging.getLogger("agentstream.service.migration")

_STATUS: Final = b"\x00migration"  # store key of a partition's part of a migration
_HANDOFF: Final = "\x00handoff"
_DONE: Final = "\x00done"
_FORWARD: Final = "\x00forward"
SPLIT_GRACE_S: Final = 2.0
"""How long after reaching its fence a source keeps collecting the leaving keys' records
before it hands them over (producers that switch a little after the migration began)."""
DRAIN_S: Final = 30.0
"""How long a source at its fence lets the keys that leave finish their inputs in flight
before it moves them as they are (their completed actions then replay at the new owner,
and under at-least-once their outputs may repeat)."""


class KeyMoved(Event):
    """Event-log record: a key's state left its partition for another one."""

    source: int
    destination: int
    partitions: int


@dataclass
class _Status:
    """One partition's part of the migration to ``partitions``."""

    partitions: int
    split: bool = False
    arrived: set[int] = field(default_factory=set)
    done: bool = False


@dataclass
class _Held:
    """A source's keys' inputs waiting for its handoff: forwarded ones first."""

    forwarded: list[tuple[int, Any, str]] = field(default_factory=list)  # (offset, msg, id)
    direct: list[Any] = field(default_factory=list)


class Handoffs:
    """The state and steps of handing keys over; :class:`~agentstream.service.migration.Migration`
    decides when."""

    def __init__(self, worker: Worker):
        self._w = worker
        self.layout: Layout | None = None
        # Sources at their fence, waiting for the keys that leave to finish what they
        # have (no input re-run, no output repeated), up to a deadline: partition ->
        # (when the fence was reached, leaving keys); and the records of those keys that
        # came since.
        self._splitting: dict[int, tuple[float, dict[Hashable, int]]] = {}
        self._outbox: dict[int, list[Any]] = {}
        self._status: dict[int, _Status] = {}
        self._held: dict[int, dict[int, _Held]] = {}
        self.keys_moved = 0
        self.keys_to_move = 0
        self._to_move: dict[int, int] = {}  # partition -> keys it has to hand over

    def _count_to_move(self) -> None:
        self.keys_to_move = sum(self._to_move.values())
        self._w.metrics.migration_keys_to_move.set(self.keys_to_move)

    async def _forward(self, message: Any, destination: int, stale: bool) -> None:
        """Send an input to its key's partition (stale: it came after the fence)."""
        if stale:
            self._w.metrics.migration_stale_inputs.inc()
        q, raw_key = message.partition, message.key
        value = dumps([_FORWARD, q, input_id(message), raw_key, message.value, message.timestamp])
        await self._w.output.send_internal(q, destination, raw_key, value)

    def _leaving(self, q: int) -> dict[Hashable, int]:
        """The keys of partition ``q`` whose new partition is another: key -> partition."""
        assert self._w._key_state is not None and self.layout is not None
        n, m = self.layout.previous, self.layout.partitions
        leaving = {}
        for _, key in self._w._key_state.keys_of(q):
            raw_key = encode_key(key)
            if raw_key is None or partition_for(raw_key, n) != q:
                continue  # null keys, and keys that another partitioner put here, stay
            if (d := partition_for(raw_key, m)) != q:
                leaving[key] = d
        return leaving

    def _start_split(self, q: int) -> None:
        if q not in self._splitting:
            self._splitting[q] = (time.monotonic(), self._leaving(q))

    def _drained(self, q: int) -> bool:
        """Whether the keys leaving ``q`` may be handed over: the partition read to its end
        at least ``SPLIT_GRACE_S`` after the fence (records that producers switching late
        still wrote to it travel before the handoff's end, so before their newer records)
        and the keys idle; or it is time to move them as they are."""
        started, leaving = self._splitting[q]
        now = time.monotonic()
        if now >= started + DRAIN_S:
            return True
        if now < started + SPLIT_GRACE_S:
            return False
        w = self._w
        assert w._consumer is not None and w._key_state is not None
        tp = TopicPartition(w.app.input_topic, q)
        end, position = w._consumer.highwater(tp), w._positions.get(tp)
        if end is not None and position is not None and position < end:
            return False
        key_state = w._key_state
        for key in leaving:
            record = key_state.get((q, key))
            if record is not None and record.current is not None:
                return False
        return True

    async def _split(self, q: int) -> None:
        """Hand the keys that leave partition ``q`` to their partitions (its fence is
        reached: every record of the old layout is accepted; what the keys still have in
        flight moves with them, completed actions replaying), then the records of theirs
        that came since, then say it is done."""
        w = self._w
        layout = self.layout
        assert layout is not None and w._key_state is not None and w._action_states is not None
        _, leaving = self._splitting.pop(q, (0.0, None))
        if leaving is None:
            leaving = self._leaving(q)
        await w.operator.cancel(lambda r: r.partition == q and r.key in leaving)
        store, output = w.store, w.output
        for key, destination in leaving.items():
            slot = (q, key)
            entries = w._key_state.export(slot)
            value = dumps([_HANDOFF, q, layout.partitions, entries])
            await output.send_internal(q, destination, encode_key(key), value)
            if q not in w._assigned:
                return  # revoked meanwhile: its new owner hands the keys over again
            for raw_key, _ in entries:
                if raw_key[:1] != b"r":  # runs: garbage once the record is gone
                    store.delete(q, raw_key)
            w._key_state.forget_slot(slot)
            w._action_states.forget_slot(slot)
            self.keys_moved += 1
            self._to_move[q] = max(self._to_move.get(q, 0) - 1, 0)
            w.metrics.migration_keys_moved.inc()
            if w._event_logger is not None:
                record = _moved_record(key, q, destination, layout.partitions)
                w._event_logger.append(record)
        for message in self._outbox.pop(q, []):
            destination = partition_for(message.key, layout.partitions)
            await self._forward(message, destination, stale=True)
        for d in layout.destinations(q):
            await output.send_internal(q, d, None, dumps([_DONE, q, layout.partitions]))
        self._count_to_move()
        status = self._status.get(q)
        if status is None:
            return  # revoked meanwhile: its new owner finishes from the saved status
        status.split = True
        self._save(q)
        log.info("partition %d handed %d keys to their new partitions", q, len(leaving))
        await self._finish(q)

    async def _release(self, q: int, source: int) -> None:
        """A source's handoff is done: its keys resume, then their held inputs run."""
        w = self._w
        assert w._key_state is not None and self.layout is not None
        n = self.layout.previous
        arrived = [
            slot
            for slot in w._key_state.keys_of(q)
            if slot[1] is not None and partition_for(encode_key(slot[1]) or b"", n) == source
        ]
        w.operator.resume(arrived)
        held = self._held.get(q, {}).pop(source, None)
        if held is None:
            return
        for _, message, ident in held.forwarded:
            await w._admit(message, ident)
        for message in held.direct:
            await w._admit(message)

    async def _finish(self, q: int) -> None:
        status, layout = self._status.get(q), self.layout
        if status is None or layout is None or status.done or not status.split:
            return
        if not set(layout.sources(q)) <= status.arrived:
            return
        status.done = True
        self._save(q)
        assert self._w._producer is not None
        await mark_moved(self._w._producer, self._w.app.name, layout, q)
        log.info("partition %d moved to the layout of %d partitions", q, layout.partitions)

    def _save(self, q: int) -> None:
        if q not in self._w._assigned:
            return  # revoked meanwhile: its new owner goes on from the last saved status
        s = self._status[q]
        value = {
            "partitions": s.partitions,
            "split": s.split,
            "arrived": sorted(s.arrived),
            "done": s.done,
        }
        self._w.store.put(q, _STATUS, dumps(value))

    def pinned(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """A copy of ``positions``, never past a record held here (re-read after a
        crash)."""
        pinned = dict(positions)
        if not any(self._held.values()) and not any(self._outbox.values()):
            return pinned
        app = self._w.app
        for q, messages in self._outbox.items():
            tp = TopicPartition(app.input_topic, q)
            if messages and tp in pinned:
                pinned[tp] = min(pinned[tp], messages[0].offset)
        for q, by_source in self._held.items():
            for held in by_source.values():
                for tp, offsets in (
                    (TopicPartition(app.input_topic, q), [m.offset for m in held.direct]),
                    (TopicPartition(app.internal_topic, q), [o for o, _, _ in held.forwarded]),
                ):
                    if offsets and tp in pinned:
                        pinned[tp] = min(pinned[tp], min(offsets))
        return pinned

    def progress(self) -> dict[str, Any] | None:
        layout = self.layout
        if layout is None or not layout.migrating:
            return None
        return {
            "from": layout.previous,
            "to": layout.partitions,
            "partitions_done": len(layout.moved),
            "partitions": layout.partitions,
            "keys_moved": self.keys_moved,
            "keys_to_move": self.keys_to_move,
        }

    # -- handing over -----------------------------------------------------------------------


def _moved_record(key: Any, source: int, destination: int, partitions: int) -> EventLogRecord:
    event = KeyMoved(source=source, destination=destination, partitions=partitions)
    return EventLogRecord(time=time.time(), key=key, seq=0, event=event)
