"""Inputs and per-key bookkeeping, and the keyed-state interface the operator writes to.

Every transition of a key (input accepted, input started, input finished) is written as
ONE :class:`KeyRecord` value, so a crash never leaves a key half-updated and a
changelogged backend sends one record per transition.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from mypy_extensions import mypyc_attr

from agentstream.serde import dumps, loads

__all__ = ["InputRecord", "KeyRecord", "KeyStateBackend", "new_input_record"]


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

    def to_wire(self) -> list[Any]:
        return list(self)

    @classmethod
    def from_wire(cls, data: list[Any]) -> InputRecord:
        return cls(*data)


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
    """The bookkeeping of one key.

    Attributes:
        seq: sequence number of the current (or last) input of the key.
        current: the input being processed, None when the key is idle.
        pending: inputs waiting for the current one to finish, in arrival order.
        memory: the key's short-term memory as of the start of ``current``.
        last_offset: the highest source offset accepted for this key (dedupes redelivery).
    """

    seq: int = 0
    current: InputRecord | None = None
    pending: list[InputRecord] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    last_offset: int = -1

    def to_bytes(self) -> bytes:
        return dumps(
            [
                self.seq,
                self.current.to_wire() if self.current else None,
                [p.to_wire() for p in self.pending],
                self.memory,
                self.last_offset,
            ],
            what="key record",
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyRecord:
        seq, current, pending, memory, last_offset = loads(data)
        return cls(
            seq=seq,
            current=InputRecord.from_wire(current) if current else None,
            pending=[InputRecord.from_wire(p) for p in pending],
            memory=memory,
            last_offset=last_offset,
        )


class KeyStateBackend(Protocol):
    """Per-key bookkeeping storage."""

    def get(self, key: Hashable) -> KeyRecord | None:
        """The record of ``key``; None for a key never seen."""

    def put(self, key: Hashable, record: KeyRecord) -> None:
        """Store ``key``'s record (the backend may keep the object or serialize it)."""

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

    def get(self, key: Hashable) -> KeyRecord | None:
        return self._data.get(key)

    def put(self, key: Hashable, record: KeyRecord) -> None:
        self._data[key] = record

    def keys(self) -> Iterator[Hashable]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)
