"""Action state: what replay-skip needs to know about each action run.

After an action completes, its record is stored under (key, seq, action, event id):
memory updates, sent events (serialized) and durable call outcomes. While an action runs,
each completed durable call is recorded at once (``completed=False``) so that a crash in
the middle of an action does not repeat a finished call.

A completed record means the step is replayed: its memory updates are re-applied and its
sent events move on with the same ids, without running the action (the operator decides in
one place, ``ActionStep._run_task``: ``if state is not None and state.completed``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from mypy_extensions import mypyc_attr

from agentstream.runtime.memory import MemoryUpdate
from agentstream.runtime.records import decode_record, encode_record, many, register_record

__all__ = [
    "ActionState",
    "ActionStateStore",
    "CallRecord",
    "InMemoryActionStateStore",
    "new_action_state",
]


@dataclass(frozen=True)
class CallRecord:
    """One durable call: position is its index in the action's list of calls.

    ``status`` is "ok" (``result`` holds the recorded result, plain data in msgpack: see
    :mod:`agentstream.runtime.results`), "error" (``error_type`` and ``error_message``), or
    "started" (began, outcome unknown; written only for calls with a reconciler).
    """

    fn_id: str
    digest: str
    status: str
    result: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None


class ActionState(NamedTuple):
    """The record of one action run (a named tuple: one is built per action run)."""

    completed: bool
    memory_updates: tuple[MemoryUpdate, ...] = ()
    sent_events: tuple[bytes, ...] = ()
    calls: tuple[CallRecord, ...] = ()


_tuple_new: Final = tuple.__new__  # Final: kept in a C variable when compiled


def new_action_state(
    completed: bool,
    memory_updates: tuple[MemoryUpdate, ...] = (),
    sent_events: tuple[bytes, ...] = (),
    calls: tuple[CallRecord, ...] = (),
) -> ActionState:
    """``ActionState(...)`` without the named tuple's constructor, which is Python code
    (this module is compiled; the hot path records one state per action run)."""
    return _tuple_new(ActionState, (completed, memory_updates, sent_events, calls))


def _updates(updates: list[list[Any]]) -> tuple[MemoryUpdate, ...]:
    return tuple([tuple(u) for u in updates])


def _same(fields: list[Any]) -> list[Any]:
    return fields


def _from_unversioned(fields: list[Any]) -> list[Any]:
    """Version 0 pickled call results: they are never read; the calls run again."""
    return [*fields[:3], []]


register_record(CallRecord, what="durable call record")
register_record(
    ActionState,
    what="action state",
    fields={
        "memory_updates": (None, _updates),  # tuples pack as arrays as they are
        "sent_events": (None, tuple),
        "calls": many(CallRecord),
    },
    migrations={0: _from_unversioned, 1: _same},  # 2 changed only the key record
    build=new_action_state,
)


class ActionStateStore(Protocol):
    """Where action state lives: in memory, or a changelogged table (service)."""

    def get(self, key: Hashable, seq: int, action: str, event_id: str) -> ActionState | None:
        """The record of (key, seq, action, event id), if any."""

    def has_input(self, key: Hashable, seq: int) -> bool:
        """Whether any action run of ``key``'s input ``seq`` is recorded (when none is,
        the operator runs the input's actions without looking each one up)."""

    def put(self, key: Hashable, seq: int, action: str, event_id: str, state: ActionState) -> None:
        """Record (or overwrite) a run's state."""

    def prune(self, key: Hashable, seq: int) -> None:
        """Drop the records of ``key``'s input ``seq``. A backend may drop older inputs'
        records too; none need it, since the operator prunes every finished input in order."""


@mypyc_attr(allow_interpreted_subclasses=True)
class InMemoryActionStateStore:
    """A real in-memory :class:`ActionStateStore`.

    States are immutable and hold only serialized payloads (events are packed, memory
    values were copied through the serializer, call results recorded as plain data), so
    they are kept as objects; ``serialize=True`` round-trips every state through bytes
    instead.
    """

    def __init__(self, *, serialize: bool = False) -> None:
        self._serialize = serialize
        self._data: dict[Hashable, dict[int, dict[tuple[str, str], Any]]] = {}
        self._floor: dict[Hashable, int] = {}  # per key: no seq below this is stored

    def get(self, key: Hashable, seq: int, action: str, event_id: str) -> ActionState | None:
        seqs = self._data.get(key)
        runs = seqs.get(seq) if seqs else None
        found = runs.get((action, event_id)) if runs else None
        if found is None or not self._serialize:
            return found
        return decode_record(ActionState, found)

    def has_input(self, key: Hashable, seq: int) -> bool:
        seqs = self._data.get(key)
        return seqs is not None and seq in seqs

    def put(self, key: Hashable, seq: int, action: str, event_id: str, state: ActionState) -> None:
        value = encode_record(state) if self._serialize else state
        seqs = self._data.get(key)
        if seqs is None:
            seqs = self._data[key] = {}
            self._floor[key] = seq
        elif seq < self._floor[key]:
            self._floor[key] = seq
        runs = seqs.get(seq)
        if runs is None:
            seqs[seq] = {(action, event_id): value}
        else:
            runs[(action, event_id)] = value

    def prune(self, key: Hashable, seq: int) -> None:
        seqs = self._data.get(key)
        if not seqs:
            return
        # Sequence numbers are dense per key, so walking up from the floor touches only
        # what is dropped (scanning the key's records would be quadratic over a backlog).
        floor = self._floor[key]
        if seq - floor < len(seqs):
            for old in range(floor, seq + 1):
                seqs.pop(old, None)
        else:
            for old in [s for s in seqs if s <= seq]:
                del seqs[old]
        if seqs:
            self._floor[key] = max(floor, seq + 1)
        else:
            del self._data[key], self._floor[key]

    def runs(self, key: Hashable, seq: int) -> dict[tuple[str, str], ActionState]:
        """The recorded runs of one input, by (action, event id), for inspection."""
        seqs = self._data.get(key)
        runs = seqs.get(seq) if seqs else None
        if not runs:
            return {}
        if not self._serialize:
            return dict(runs)
        return {ident: decode_record(ActionState, raw) for ident, raw in runs.items()}

    def entries(self) -> list[tuple[Hashable, int, str, str]]:
        """Every (key, seq, action, event id) recorded, for inspection in tests."""
        return [
            (key, seq, action, event_id)
            for key, seqs in self._data.items()
            for seq, runs in seqs.items()
            for action, event_id in runs
        ]

    def __len__(self) -> int:
        return sum(len(runs) for seqs in self._data.values() for runs in seqs.values())
