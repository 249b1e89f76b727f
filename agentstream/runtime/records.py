"""Inputs and per-key bookkeeping, the keyed-state interface the operator writes to, and
the one codec every stored record goes through.

Every transition of a key (input accepted, input started, input finished) is one
:meth:`KeyStateBackend.put` of its small :class:`KeyRecord` (seq, current and pending
inputs, last offset); the finish of an input also hands over the key's short-term memory,
which the backend stores where it changed (a changelogged backend: one record per changed
path, never the untouched ones) in the same transition.

The record codec (:func:`encode_record`, :func:`decode_record`)::

    stored value = version byte + msgpack [field, field, ...]
                   (fields in the record class's declared order; a nested record is the
                   list of its own fields; nothing but plain data is ever written)

A record type is registered once with :func:`register_record`, which reads its fields from
the class (a dataclass or a named tuple). The version byte belongs to the stored value as a
whole; decoding reads it first and migrates older layouts (``migrations``: version ->
function from that version's field list to the next one's) before building the record, and
refuses a version it does not know with :class:`~agentstream.errors.SerializationError`.
Version 0 is the unversioned layout written before the byte existed (a bare msgpack
array). Nothing read back is ever unpickled or evaluated: a field is plain data, or a
nested record decoded by the same rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from mypy_extensions import mypyc_attr

from agentstream.errors import SerializationError
from agentstream.runtime.memory import MemoryStore
from agentstream.serde import dumps, loads

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

R = TypeVar("R")

RECORD_VERSION: Final = 2
_VERSION_BYTE: Final = bytes([RECORD_VERSION])
# A bare msgpack array (fixarray, array 16, array 32): the unversioned layout, version 0.
_LEGACY_MARKERS: Final = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])

Migration = Callable[[list[Any]], list[Any]]
# (to plain, from plain); None where the value is already what msgpack packs / decodes to.
FieldCodec = tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]


class _Layout:
    """How one record type is written: its class, field names and field converters.

    A named tuple packs as the array of its fields as it is (msgpack packs tuples), so a
    named tuple without converters is written without any copy.
    """

    __slots__ = ("build", "decoders", "encoders", "fields_of", "migrations", "names", "what")

    def __init__(
        self,
        cls: type,
        build: Callable[..., Any],
        names: tuple[str, ...],
        fields: Mapping[str, FieldCodec],
        migrations: Mapping[int, Migration],
        what: str,
    ) -> None:
        self.build = build
        self.names = names
        # The field values in order, as a tuple (one C call; a named tuple is that already).
        self.fields_of: Callable[[Any], Any] | None = (
            attrgetter(*names) if dataclasses.is_dataclass(cls) else None
        )
        self.encoders: list[tuple[int, Callable[[Any], Any]]] = []
        self.decoders: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(names):
            encode, decode = fields.get(name, (None, None))
            if encode is not None:
                self.encoders.append((i, encode))
            if decode is not None:
                self.decoders.append((i, decode))
        self.migrations = dict(migrations)
        self.what = what

    @property
    def packs_as_is(self) -> bool:
        """Whether a record packs as it is (a named tuple of plain fields)."""
        return self.fields_of is None and not self.encoders

    def to_plain(self, record: Any) -> Any:
        fields_of = self.fields_of
        values = record if fields_of is None else fields_of(record)
        if not self.encoders:
            return values
        values = list(values)
        for i, encode in self.encoders:
            values[i] = encode(values[i])
        return values

    def from_plain(self, data: list[Any]) -> Any:
        if len(data) > len(self.names):
            raise SerializationError(
                f"{self.what} has {len(data)} fields, this version knows {len(self.names)}"
            )
        for i, decode in self.decoders:
            if i < len(data):
                data[i] = decode(data[i])
        return self.build(*data)  # missing trailing fields take their defaults


_LAYOUTS: Final[dict[type, _Layout]] = {}


def register_record(
    cls: type,
    *,
    what: str,
    fields: Mapping[str, FieldCodec] | None = None,
    migrations: Mapping[int, Migration] | None = None,
    build: Callable[..., Any] | None = None,
) -> None:
    """Make ``cls`` (a dataclass or a named tuple) a record type of the codec.

    Args:
        what: what the record is, for error messages ("key record").
        fields: converters of the fields that are not plain data (nested records,
            tuples), as (to plain, from plain) pairs; see :func:`one` and :func:`many`.
        migrations: version -> function turning that version's field list into the next
            version's (applied in turn up to :data:`RECORD_VERSION`).
        build: makes the record from its field values in order (default: the class).
    """
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
    else:
        names = tuple(cls._fields)  # type: ignore[attr-defined]
    _LAYOUTS[cls] = _Layout(cls, build or cls, names, fields or {}, migrations or {}, what)


def _layout(cls: type) -> _Layout:
    layout = _LAYOUTS.get(cls)
    if layout is None:
        raise TypeError(f"{cls.__name__} is not a registered record type")
    return layout


def one(cls: type) -> FieldCodec:
    """The converters of a field holding one record of ``cls``, or None."""
    layout = _layout(cls)

    def encode(value: Any) -> Any:
        return None if value is None else layout.to_plain(value)

    def decode(value: Any) -> Any:
        return None if value is None else layout.from_plain(value)

    return (None if layout.packs_as_is else encode), decode


def many(cls: type | None, container: Callable[[Any], Any] = tuple) -> FieldCodec:
    """The converters of a field holding a sequence (``container``, a tuple by default)
    of records of ``cls``, or of plain values when ``cls`` is None."""
    if cls is None:
        return None, container
    layout = _layout(cls)
    to_plain, from_plain = layout.to_plain, layout.from_plain

    def encode(values: Any) -> Any:
        return [to_plain(v) for v in values]

    def decode(values: Any) -> Any:
        return container([from_plain(v) for v in values])

    return (None if layout.packs_as_is else encode), decode


def encode_record(record: Any) -> bytes:
    """``record`` (of a registered type) as stored: version byte + msgpack fields."""
    layout = _layout(type(record))
    return _VERSION_BYTE + dumps(layout.to_plain(record), what=layout.what)


def decode_record(cls: type[R], data: bytes) -> R:
    """The record of type ``cls`` that :func:`encode_record` wrote (any known version).

    Raises:
        SerializationError: the bytes are not such a record, or were written by an
            unknown (newer) version.
    """
    layout = _layout(cls)
    if not data:
        raise SerializationError(f"{layout.what}: empty record")
    version = data[0]
    try:
        if version == RECORD_VERSION:
            fields = loads(data[1:])
        elif version in _LEGACY_MARKERS:
            version, fields = 0, loads(data)
        else:
            fields = loads(data[1:])
        if version != RECORD_VERSION:
            fields = _migrate(layout, version, fields)
        if not isinstance(fields, list):
            raise SerializationError(f"{layout.what} is not a list of fields")
        record: R = layout.from_plain(fields)
    except SerializationError:
        raise
    except Exception as exc:  # malformed bytes: msgpack or the record's own checks
        raise SerializationError(f"{layout.what} cannot be decoded: {exc!r}") from exc
    return record


def _migrate(layout: _Layout, version: int, fields: Any) -> Any:
    while version < RECORD_VERSION:
        migration = layout.migrations.get(version)
        if migration is None:
            break
        fields = migration(fields)
        version += 1
    if version != RECORD_VERSION:
        raise SerializationError(
            f"{layout.what} was written in record format version {version}; this version "
            f"of agentstream reads versions up to {RECORD_VERSION} (upgrade it, or migrate)"
        )
    return fields


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
