"""The event-log record and its on-disk form: one JSON object per line.

The runtime builds an :class:`EventLogRecord` for every event it processes (inputs, events
sent by actions, outputs); a logger (:mod:`agentstream.observability.eventlog`) writes it
with :meth:`EventLogRecord.to_json_dict`, the reader
(:mod:`agentstream.observability.eventlog_reader`) turns a line back into one.

Design note -- the record on disk is one JSON object per line::

    {"time": "2024-05-01T12:00:00.000000Z", "key": "user-1", "seq": 3,
     "event_type": "myapp.events.ToolCalled", "id": "9f..", "parent_id": "1c..",
     "action": "plan", "source_timestamp": 1714564800000, "payload": {...}}

``event_type`` is the registered type name (``module.QualName``), which is what lets the
reader rebuild the right :class:`~agentstream.api.events.Event` subclass. At the
``standard`` level a payload whose JSON is larger than ``max_payload_bytes`` is replaced by
``{"truncated": true, "preview": "<first bytes of the JSON>"}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from agentstream.api.events import Event

__all__ = ["DurableCallLogged", "EventLogRecord", "logged_type_name"]

_GENERIC_EVENT_TYPE = Event.type_name()


def _to_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON; unknown objects become their ``repr``.

    Non-finite floats become the strings ``"NaN"``/``"Infinity"`` so every line is strict
    JSON (and pydantic float fields still parse them back).
    """
    try:
        return to_json(value, fallback=repr, inf_nan_mode="strings")
    except Exception:
        # e.g. bytes that are not UTF-8: retry as base64 before giving up on the value.
        try:
            return to_json(value, fallback=repr, inf_nan_mode="strings", bytes_mode="base64")
        except Exception:
            return to_json(repr(value))


def _payload_json(attributes: dict[str, Any]) -> bytes:
    try:
        return to_json(attributes, fallback=repr, inf_nan_mode="strings")
    except Exception:
        # Attribute by attribute, so one odd value does not change how the others look.
        return to_json({str(k): json.loads(_to_json(v)) for k, v in attributes.items()})


def logged_type_name(event: Event) -> str:
    """The type name a record carries.

    A generic :class:`Event` that stands for an event of an unknown class (as
    :func:`~agentstream.serde.decode_event` returns it) is logged under that class's name.
    """
    if type(event) is Event:
        original = getattr(event, "event_type", None)
        if isinstance(original, str) and original:
            return original
    return type(event).type_name()


def _logged_payload(event: Event) -> dict[str, Any]:
    attributes = event.attributes()
    if type(event) is Event and logged_type_name(event) != _GENERIC_EVENT_TYPE:
        attributes.pop("event_type", None)
    return attributes


def _format_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DurableCallLogged(Event):
    """The event-log record of a durable call (not an event actions see or send).

    Attributes:
        function: the function's id (``module.qualname``).
        args_digest: the digest of its arguments (what replay compares).
        position: the call's index in the action run.
        outcome: ``ok``, ``error`` (the call raised) or ``replayed`` (served from the
            record, the function not called).
        latency_ms: how long the call took (0 when replayed).
        error: the exception's type and message, for ``error``.
    """

    function: str
    args_digest: str
    position: int
    outcome: str
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class EventLogRecord:
    """One processed event, as the event log stores it.

    Attributes:
        time: when the event was processed, in seconds since the epoch.
        key: the record key the event belongs to (JSON-able; usually a string).
        seq: the key's sequence number of the input being processed.
        event: the event itself.
        action: the action that sent the event; None for input events.
        replayed: the event was re-sent by a replayed action (one that had completed
            before a restart and did not run again).
    """

    time: float
    key: Any
    seq: int
    event: Event
    action: str | None = None
    replayed: bool = False

    def to_json_dict(self, max_payload_bytes: int | None = None) -> dict[str, Any]:
        """The record as a JSON-able dict (the on-disk format).

        Args:
            max_payload_bytes: if the UTF-8 JSON encoding of the payload is longer than
                this, the payload is replaced by ``{"truncated": True, "preview": ...}``
                holding at most this many bytes of that (compact) JSON. None keeps it whole.

        Returns:
            A dict with ``time`` (ISO-8601, UTC), ``key``, ``seq``, ``event_type``, ``id``,
            ``parent_id``, ``action``, ``source_timestamp`` and ``payload``; and
            ``"replayed": true`` for an event re-sent by a replayed action.
        """
        encoded = _payload_json(_logged_payload(self.event))
        payload: dict[str, Any]
        if max_payload_bytes is not None and len(encoded) > max_payload_bytes:
            preview = encoded[: max(max_payload_bytes, 0)].decode("utf-8", errors="ignore")
            payload = {"truncated": True, "preview": preview}
        else:
            payload = json.loads(encoded)
        line = {
            "time": _format_time(self.time),
            "key": json.loads(_to_json(self.key)),
            "seq": self.seq,
            "event_type": logged_type_name(self.event),
            "id": self.event.id,
            "parent_id": self.event.parent_id,
            "action": self.action,
            "source_timestamp": self.event.source_timestamp,
            "payload": payload,
        }
        if self.replayed:
            line["replayed"] = True
        return line
