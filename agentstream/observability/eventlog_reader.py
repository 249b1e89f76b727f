"""The event-log reader: JSON lines written by a file logger, back as records and events.

Mirrors Flink Agents' ``EventLogRecordJsonDeserializer``. A line's ``event_type`` names the
class to rebuild (see :mod:`agentstream.observability.eventlog_record` for the format);
a class that is not imported, or no longer accepts the payload, gives a generic
:class:`~agentstream.api.events.Event` carrying the payload and an ``event_type``
attribute; a truncated payload reads back as a generic event with ``truncated=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from agentstream.api.events import Event, event_class_for
from agentstream.errors import AgentStreamError
from agentstream.observability.eventlog_record import EventLogRecord
from agentstream.serde import decode_event

__all__ = ["EventLogFormatError", "parse_event_log_record", "read_event_log"]

_TRUNCATED_KEYS = frozenset({"truncated", "preview"})


class EventLogFormatError(AgentStreamError, ValueError):
    """An event-log line is not a valid record.

    Attributes:
        reason: what is wrong with the line.
        path: the file the line was read from, if known.
        line_number: its 1-based line number, if known.
    """

    def __init__(self, reason: str, path: str | None = None, line_number: int | None = None):
        self.reason = reason
        self.path = path
        self.line_number = line_number
        where = f"{path}:{line_number}: " if path is not None else ""
        super().__init__(
            f"{where}invalid event-log record: {reason}. Event logs are JSON lines written "
            "by FileEventLogger; pass skip_invalid=True to read_event_log() to skip bad lines."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.path, self.line_number))


def _parse_time(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"'time' must be an ISO-8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_event_log_record(line: str) -> EventLogRecord:
    """Parse one event-log line back into a record.

    The event is rebuilt as the class its ``event_type`` names when that class has been
    imported; otherwise (or when the class no longer accepts the payload) as a generic
    :class:`Event` carrying the payload and an ``event_type`` attribute. A truncated
    payload comes back as a generic :class:`Event` with ``truncated=True`` and ``preview``.

    Raises:
        EventLogFormatError: the line is not JSON or lacks required fields.
    """
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise EventLogFormatError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EventLogFormatError(f"expected a JSON object, got {type(data).__name__}")
    try:
        event_type = data["event_type"]
        seq = data["seq"]
        when = _parse_time(data["time"])
    except KeyError as exc:
        raise EventLogFormatError(f"missing field {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise EventLogFormatError(f"bad 'time' ({exc})") from exc
    if not isinstance(event_type, str) or not event_type:
        raise EventLogFormatError(f"'event_type' must be a non-empty string, got {event_type!r}")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise EventLogFormatError(f"'seq' must be an integer, got {seq!r}")
    payload = data.get("payload") or {}
    if not isinstance(payload, dict):
        raise EventLogFormatError(f"'payload' must be an object, got {type(payload).__name__}")
    action = data.get("action")
    if action is not None and not isinstance(action, str):
        raise EventLogFormatError(f"'action' must be a string or null, got {action!r}")
    ident = {
        "id": data.get("id"),
        "parent_id": data.get("parent_id"),
        "source_timestamp": data.get("source_timestamp"),
    }
    event = _rebuild_event(event_type, ident, payload)
    return EventLogRecord(
        time=when,
        key=data.get("key"),
        seq=seq,
        event=event,
        action=action,
        replayed=data.get("replayed") is True,
    )


def _rebuild_event(event_type: str, ident: dict[str, Any], payload: dict[str, Any]) -> Event:
    truncated = set(payload) == _TRUNCATED_KEYS and payload.get("truncated") is True
    if not truncated and event_class_for(event_type) is not None:
        try:
            return decode_event({"type": event_type, **ident, "attributes": payload})
        except ValidationError:
            pass  # the class changed since the record was written: keep the data, generic
    fields = {k: v for k, v in payload.items() if k not in ident}
    try:
        return Event.model_validate({**fields, **ident, "event_type": event_type})
    except ValidationError as exc:
        raise EventLogFormatError(f"bad identity fields ({exc})") from exc


def read_event_log(
    path: str | os.PathLike[str], *, skip_invalid: bool = False
) -> Iterator[EventLogRecord]:
    """Read the records of a JSONL event log written by :class:`FileEventLogger`.

    Args:
        path: the log file.
        skip_invalid: skip lines that do not parse (e.g. a last line cut short by a crash)
            instead of raising.

    Yields:
        The records, in file order.

    Raises:
        EventLogFormatError: a line does not parse (unless ``skip_invalid``); carries the
            path and line number.
    """
    name = os.fspath(path)
    with open(name, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield parse_event_log_record(line)
            except EventLogFormatError as exc:
                if skip_invalid:
                    continue
                raise EventLogFormatError(exc.reason, name, number) from exc
