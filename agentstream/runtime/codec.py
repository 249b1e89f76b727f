"""The one codec every stored record goes through.

Encoding (:func:`encode_record`, :func:`decode_record`)::

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
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Any, Final, TypeVar

from agentstream.errors import SerializationError
from agentstream.serde import dumps, loads

__all__ = [
    "RECORD_VERSION",
    "FieldCodec",
    "Migration",
    "decode_record",
    "encode_record",
    "many",
    "one",
    "register_record",
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
