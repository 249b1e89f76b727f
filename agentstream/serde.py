"""Serialization of events and values: msgpack for internal topics and tables.

Values may be anything msgpack packs (None, bool, int, float, str, bytes, lists, dicts)
plus whatever pydantic can turn into such values (models, datetimes, UUIDs, enums...).
Everything else is refused with :class:`SerializationError` at the point it is handed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Pack ``value`` with msgpack, or raise :class:`SerializationError` naming ``what``."""
    try:
        return msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(
            f"{what} cannot be serialized: {exc}. Use JSON-like values (dict, list, str, "
            "int, float, bool, None, bytes) or pydantic models."
        ) from exc


def loads(data: bytes) -> Any:
    """Unpack bytes written by :func:`dumps`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_event(event: Event) -> dict[str, Any]:
    """The event as a plain mapping: type name, identity fields and attributes."""
    return {
        "type": type(event).type_name(),
        "id": event.id,
        "parent_id": event.parent_id,
        "source_timestamp": event.source_timestamp,
        "attributes": event.attributes(),
    }


def decode_event(record: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`encode_event`'s mapping.

    An unknown type name comes back as a plain :class:`Event` carrying the attributes and
    an ``event_type`` attribute with the original type name.
    """
    cls = event_class_for(record["type"])
    fields = dict(record.get("attributes") or {})
    ident = {
        "id": record.get("id"),
        "parent_id": record.get("parent_id"),
        "source_timestamp": record.get("source_timestamp"),
    }
    if cls is None:
        return Event.model_validate({**fields, **ident, "event_type": record["type"]})
    return cls.model_validate({**fields, **ident})


def pack_event(event: Event) -> bytes:
    """Serialize an event to bytes; raises :class:`SerializationError` if it cannot be."""
    return dumps(encode_event(event), what=f"event {type(event).__name__}")


def unpack_event(data: bytes) -> Event:
    """Inverse of :func:`pack_event`."""
    return decode_event(loads(data))
