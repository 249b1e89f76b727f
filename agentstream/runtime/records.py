"""Inputs and per-key bookkeeping, and the keyed-state interface the operator writes to.

Every transition of a key (input accepted, input started, input finished) is one
:meth:`KeyStateBackend.put` of its small :class:`KeyRecord` (seq, current and pending
inputs, last offset); the finish of an input also hands over the key's short-term memory,
which the backend stores where it changed (a changelogged backend: one record per changed
path, never the untouched ones) in the same transition.

Stored records go through :mod:`agentstream.runtime.codec` (one versioned codec).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from mypy_extensions import mypyc_attr

from agentstream.errors import SerializationError
from agentstream.runtime.codec import (
    RECORD_VERSION,
    FieldCodec,
    decode_record,
    encode_record,
    many,
    one,
    register_record,
)
from agentstream.runtime.memory import MemoryStore

__all__ = [
    "RECORD_VERSION",
    "InputRecord",
    "KeyRecord",
    "KeyStateBackend",
    "LegacyKeyRecord",
    "decode_record",
    "encode_record",
    "new_input_record",
    "register_record",
    "split_legacy",
]


class InputRecord(NamedTuple):
    """One input: its key, decoded value, stable id and source timestamp (ms).

    ``partition`` and ``offset`` say where it came from (None in-process); the event-time
    progress is tracked per partition. A named tuple: one is built per input.
    """

    key: Any
    value: Any
    id: str | None = None
    timestamp: int | None = None
    partition: int = 0
    offset: int | None = None


_tuple_new: Final = tuple.__new__  # Final: kept in a C variable when compiled


def new_input_record(
    key: Any,
    value: Any,
    id: str | None,
    timestamp: int | None = None,
    partition: int = 0,
    offset: int | None = None,
) -> InputRecord:
    """``InputRecord(...)`` without the named tuple's constructor, which is Python code
    (this module is compiled; the hot path builds one record per input)."""
    return _tuple_new(InputRecord, (key, value, id, timestamp, partition, offset))


@dataclass(slots=True)
class KeyRecord:
    """The bookkeeping of one key (its memory is stored apart, per path).

    Attributes:
        seq: sequence number of the current (or last) input of the key.
        current: the input being processed, None when the key is idle.
        pending: inputs waiting for the current one to finish, in arrival order.
        last_offset: the highest source offset accepted for this key (dedupes redelivery).
    """

    seq: int = 0
    current: InputRecord | None = None
    pending: list[InputRecord] = field(default_factory=list)
    last_offset: int = -1


@dataclass(slots=True)
class LegacyKeyRecord:
    """A key record of versions 0 and 1, which carried the key's whole short-term memory
    (the dumped form of a :class:`~agentstream.runtime.memory.MemoryStore`). Read only to
    migrate: see :func:`split_legacy`."""

    seq: int = 0
    current: InputRecord | None = None
    pending: list[InputRecord] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    last_offset: int = -1


def _same(fields: list[Any]) -> list[Any]:
    return fields


def _without_memory(fields: list[Any]) -> list[Any]:
    if len(fields) > 3 and fields[3]:
        raise SerializationError(
            "key record: written by agentstream before version 2 with the key's memory in "
            "it; read it with LegacyKeyRecord and split_legacy (the worker's state tables "
            "migrate such records when they read them)"
        )
    return fields[:3] + fields[4:]


def split_legacy(legacy: LegacyKeyRecord) -> tuple[KeyRecord, dict[str, Any] | None]:
    """A legacy key record as today's record and the memory it carried (dumped form)."""
    record = KeyRecord(legacy.seq, legacy.current, legacy.pending, legacy.last_offset)
    return record, legacy.memory or None


register_record(InputRecord, what="input record", build=new_input_record)
_KEY_FIELDS: Final[Mapping[str, FieldCodec]] = {
    "current": one(InputRecord),
    "pending": many(InputRecord, list),
}
register_record(
    KeyRecord,
    what="key record",
    fields=_KEY_FIELDS,
    # 0, the unversioned layout, had the fields of 1; 2 moved the memory out.
    migrations={0: _same, 1: _without_memory},
)
register_record(
    LegacyKeyRecord,
    what="key record (before version 2)",
    fields=_KEY_FIELDS,
    migrations={0: _same, 1: _same},  # its "current" layout is version 1's
)


class KeyStateBackend(Protocol):
    """Per-key storage: the bookkeeping, and the key's short-term memory.

    Memory is handed over with the bookkeeping at the end of an input
    (``put(key, record, memory)``): both are one transition, so a crash never leaves one
    without the other. A backend that keeps memory per path writes the paths the store
    ``touched`` and nothing else.
    """

    def get(self, key: Hashable) -> KeyRecord | None:
        """The record of ``key``; None for a key never seen."""

    def put(self, key: Hashable, record: KeyRecord, memory: MemoryStore | None = None) -> None:
        """Store ``key``'s record (the backend may keep the object or serialize it); with
        ``memory``, also the key's short-term memory as it is now."""

    def memory(self, key: Hashable) -> dict[str, Any] | None:
        """The key's short-term memory as last stored (the dumped form of a
        :class:`~agentstream.runtime.memory.MemoryStore`), None when empty or never seen.
        The caller must not change it."""

    def keys(self) -> Iterator[Hashable]:
        """Every key with a record."""


@mypyc_attr(allow_interpreted_subclasses=True)
class InMemoryKeyState:
    """A real in-memory :class:`KeyStateBackend`.

    Records are kept as objects (the operator replaces a record with ``put`` after each
    change and never mutates a stored one afterwards); their serialization is exercised
    by the changelogged backend and the contract tests.
    """

    def __init__(self) -> None:
        self._data: dict[Hashable, KeyRecord] = {}
        self._memory: dict[Hashable, dict[str, Any]] = {}

    def get(self, key: Hashable) -> KeyRecord | None:
        return self._data.get(key)

    def put(self, key: Hashable, record: KeyRecord, memory: MemoryStore | None = None) -> None:
        self._data[key] = record
        if memory is not None:
            # The dumped form is never mutated later (copy on write), so it is kept as is.
            state = memory.dump()
            if state is not None:
                self._memory[key] = state
            elif self._memory and key in self._memory:
                del self._memory[key]

    def memory(self, key: Hashable) -> dict[str, Any] | None:
        kept = self._memory
        return kept.get(key) if kept else None

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)
