"""Serialization of events and values: msgpack for internal topics and tables.

Values may be anything msgpack packs (None, bool, int, float, str, bytes, lists, dicts)
plus whatever pydantic can turn into such values (models, datetimes, UUIDs, enums...).
Everything else is refused with :class:`SerializationError` at the point it is handed in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Final

import msgpack
from pydantic_core import PydanticSerializationError, to_jsonable_python

from agentstream.api.events import Event, event_class_for
from agentstream.errors import SerializationError

__all__ = ["decode_event", "dumps", "encode_event", "loads", "pack_event", "unpack_event"]


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, Iterator):
        # Serializing would consume it (and never end for an infinite one).
        raise TypeError(f"cannot serialize an iterator ({type(value).__name__})")
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise TypeError(f"cannot serialize value of type {type(value).__name__}") from exc


_packers: Final = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's packer (building one per call costs more than packing a record)."""
    try:
        return _packers.packer
    except AttributeError:
        _packers.packer = msgpack.Packer(default=_default, use_bin_type=True, datetime=False)
        return _packers.packer


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Pack ``value`` with msgpack, or raise :class:`SerializationError` naming ``what``."""
    try:
        return _packer().pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(
            f"{what} cannot be serialized: {exc}. Use JSON-like values (dict, list, str, "
            "int, float, bool, None, bytes) or pydantic models."
        ) from exc


def loads(data: bytes) -> Any:
    """Unpack bytes written by :func:`dumps`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


_IDENTITY: Final = ("id", "parent_id", "source_timestamp")
_SERIALIZATION_KEYS = frozenset({"serialization", "serialization_exclude", "computed_fields"})
_forms: Final[dict[type[Event], tuple[str, bool]]] = {}


def _customizes_serialization(schema: Any) -> bool:
    """Whether a pydantic core schema has serializers, excluded or computed fields."""
    if isinstance(schema, dict):
        return any(
            (key in _SERIALIZATION_KEYS and value) or _customizes_serialization(value)
            for key, value in schema.items()
        )
    if isinstance(schema, (list, tuple)):
        return any(_customizes_serialization(item) for item in schema)
    return False


def _form(cls: type[Event]) -> tuple[str, bool]:
    """``cls``'s type name, and whether it is plain (both looked up once per class).

    A class is plain if ``model_dump`` equals its fields as stored. Then the attributes are
    taken from the instance directly (nested models and other values are converted by the
    serializer's fallback exactly as ``model_dump`` + ``to_jsonable_python`` would), which
    is several times cheaper on the hot path.
    """
    form = _forms.get(cls)
    if form is None:
        plain = not _customizes_serialization(cls.__pydantic_core_schema__)
        form = _forms[cls] = (cls._type_name, plain)
    return form


def _attributes(event: Event) -> dict[str, Any]:
    if not _form(type(event))[1]:
        return event.attributes()
    attributes = event.__dict__.copy()
    for name in _IDENTITY:
        attributes.pop(name, None)
    extra = event.__pydantic_extra__
    if extra:
        attributes.update(extra)
    return attributes


def encode_event(event: Event) -> dict[str, Any]:
    """The event as a plain mapping: type name, identity fields and attributes."""
    return {
        "type": type(event)._type_name,
        "id": event.id,
        "parent_id": event.parent_id,
        "source_timestamp": event.source_timestamp,
        "attributes": _attributes(event),
    }


def decode_event(record: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`encode_event`'s mapping.

    An unknown type name comes back as a plain :class:`Event` carrying the attributes and
    an ``event_type`` attribute with the original type name.
    """
    fields = dict(record.get("attributes") or {})
    fields["id"] = record.get("id")
    fields["parent_id"] = record.get("parent_id")
    fields["source_timestamp"] = record.get("source_timestamp")
    return _rebuild(record["type"], fields)


def _rebuild(type_name: str, fields: dict[str, Any]) -> Event:
    """The registered class's event from its fields; an unknown type name gives a plain
    :class:`Event` with an ``event_type`` attribute naming it."""
    cls = event_class_for(type_name)
    if cls is None:
        fields["event_type"] = type_name
        return Event.model_validate(fields)
    return cls.model_validate(fields)


def pack_event(event: Event) -> bytes:
    """Serialize an event to bytes; raises :class:`SerializationError` if it cannot be.

    The form is ``[type name, fields, extra fields]`` (identity fields included): one is
    packed per sent event, so a plain event's fields are packed as they are stored.
    """
    cls = type(event)
    type_name, plain = _form(cls)
    fields = event.__dict__ if plain else event.model_dump(mode="python")
    extra = event.__pydantic_extra__
    try:
        return _packer().pack([type_name, fields, extra or None])
    except (TypeError, ValueError, OverflowError):
        return dumps([type_name, fields, extra or None], what=f"event {cls.__name__}")


def unpack_event(data: bytes) -> Event:
    """Inverse of :func:`pack_event`."""
    type_name, fields, extra = loads(data)
    if extra:
        fields.update(extra)
    return _rebuild(type_name, fields)
