"""The event log: one record per event the runtime processes, written by a logger.

Mirrors Flink Agents' ``EventLogger`` / ``EventLoggerFactory`` / ``EventLoggerConfig``. The
runtime hands an :class:`EventLogRecord` (:mod:`~agentstream.observability.eventlog_record`,
which also describes the on-disk format) for every processed event to an
:class:`EventLogger`. Loggers are created by name from a registry
(:func:`register_event_logger`, :func:`create_event_logger`); ``"file"`` (JSON lines) and
``"null"`` are built in. The reader (:func:`read_event_log`) is in
:mod:`~agentstream.observability.eventlog_reader`; both are importable from here too.

A logger must never take the runtime down: I/O and formatting failures inside
:meth:`EventLogger.append` are counted and logged once, and the record is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Literal, Protocol, get_args, runtime_checkable

from agentstream.api.events import Event
from agentstream.errors import ConfigurationError
from agentstream.observability.eventlog_reader import (
    EventLogFormatError,
    parse_event_log_record,
    read_event_log,
)
from agentstream.observability.eventlog_record import EventLogRecord, logged_type_name

__all__ = [
    "EventLogFormatError",
    "EventLogLevel",
    "EventLogRecord",
    "EventLogger",
    "EventLoggerConfig",
    "EventLoggerFactory",
    "FileEventLogger",
    "FlushPolicy",
    "NullEventLogger",
    "create_event_logger",
    "parse_event_log_record",
    "read_event_log",
    "register_event_logger",
    "registered_event_logger_types",
]

logger = logging.getLogger(__name__)

EventLogLevel = Literal["off", "standard", "verbose"]
"""``off``: nothing is written; ``standard``: payloads truncated; ``verbose``: full payloads."""

FlushPolicy = Literal["always", "interval", "close"]
"""When a file logger flushes its buffer: after every record, periodically, or on close."""

_LEVELS: frozenset[str] = frozenset(get_args(EventLogLevel))
_FLUSH_POLICIES: frozenset[str] = frozenset(get_args(FlushPolicy))


@runtime_checkable
class EventLogger(Protocol):
    """Receives every processed event's record.

    :meth:`append` is called on the runtime's hot path: it must be cheap and must not
    raise for I/O problems (count them, log a warning, drop the record).
    """

    def open(self) -> None:
        """Acquire resources (files, producers); called once before the first append."""

    def append(self, record: EventLogRecord) -> None:
        """Log one record (if the logger's configuration accepts its event)."""

    def flush(self) -> None:
        """Make the records appended so far durable/visible."""

    def close(self) -> None:
        """Flush and release resources."""


@dataclass(frozen=True)
class EventLoggerConfig:
    """Configuration of an event logger.

    Attributes:
        type: the registered logger type (``"file"``, ``"null"`` or a custom name).
        path: the file the ``"file"`` logger appends to (parent directories are created).
        level: ``"off"`` writes nothing; ``"standard"`` truncates payloads larger than
            ``max_payload_bytes``; ``"verbose"`` writes full payloads.
        max_payload_bytes: payload size limit at the ``standard`` level.
        include_event_types: if not empty, only these event types are logged. An entry
            matches an event's type name (``module.QualName``) or its class's short name.
        exclude_event_types: event types never logged (same matching); wins over include.
        flush: ``"always"`` flushes after every record; ``"interval"`` at least every
            ``flush_interval_seconds`` (on append, and by a background thread while the
            logger is idle) and on :meth:`EventLogger.flush`; ``"close"`` only on
            flush/close.
        flush_interval_seconds: the interval of the ``"interval"`` policy.
        properties: free-form settings for custom loggers.
    """

    type: str = "file"
    path: str | os.PathLike[str] | None = None
    level: EventLogLevel = "standard"
    max_payload_bytes: int = 1024
    include_event_types: frozenset[str] = frozenset()
    exclude_event_types: frozenset[str] = frozenset()
    flush: FlushPolicy = "interval"
    flush_interval_seconds: float = 1.0
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.level not in _LEVELS:
            raise ConfigurationError(
                f"event log level {self.level!r} is not one of {sorted(_LEVELS)}"
            )
        if self.flush not in _FLUSH_POLICIES:
            raise ConfigurationError(
                f"event log flush policy {self.flush!r} is not one of {sorted(_FLUSH_POLICIES)}"
            )
        if self.flush_interval_seconds < 0:
            raise ConfigurationError(
                f"flush_interval_seconds must be >= 0, got {self.flush_interval_seconds}"
            )
        if self.max_payload_bytes < 0:
            raise ConfigurationError(
                f"max_payload_bytes must be >= 0, got {self.max_payload_bytes}"
            )
        for name in ("include_event_types", "exclude_event_types"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(
                    f"{name} must be a collection of type names, not the string {value!r}"
                )
            object.__setattr__(self, name, frozenset(value))
        object.__setattr__(self, "properties", MappingProxyType(dict(self.properties)))

    @property
    def payload_limit(self) -> int | None:
        """The payload size limit the level implies (None: no limit)."""
        return None if self.level == "verbose" else self.max_payload_bytes

    def accepts(self, event: Event) -> bool:
        """Whether records of ``event`` are written under this configuration."""
        if self.level == "off":
            return False
        if not self.include_event_types and not self.exclude_event_types:
            return True
        type_name = logged_type_name(event)
        names = {type_name, type_name.rsplit(".", 1)[-1]}
        cls = type(event)
        if type_name == cls.type_name():
            names.update((cls.__name__, cls.__qualname__))
        if self.include_event_types and names.isdisjoint(self.include_event_types):
            return False
        return names.isdisjoint(self.exclude_event_types)


EventLoggerFactory = Callable[[EventLoggerConfig], EventLogger]
"""Builds an :class:`EventLogger` from its configuration."""


_FACTORIES: dict[str, EventLoggerFactory] = {}
_FACTORIES_LOCK = threading.Lock()


def register_event_logger(type_name: str, factory: EventLoggerFactory) -> None:
    """Register ``factory`` under ``type_name`` (replacing any previous registration).

    Args:
        type_name: the name an :class:`EventLoggerConfig` selects it by (``config.type``).
        factory: called with the configuration, returns an :class:`EventLogger`.
    """
    if not isinstance(type_name, str) or not type_name:
        raise ConfigurationError(f"event logger type must be a non-empty string, got {type_name!r}")
    if not callable(factory):
        raise ConfigurationError(f"event logger factory for {type_name!r} is not callable")
    with _FACTORIES_LOCK:
        _FACTORIES[type_name] = factory


def registered_event_logger_types() -> list[str]:
    """The registered event logger type names, sorted."""
    with _FACTORIES_LOCK:
        return sorted(_FACTORIES)


def create_event_logger(config: EventLoggerConfig) -> EventLogger:
    """Create the logger ``config.type`` names (not yet opened).

    Raises:
        ConfigurationError: no logger is registered under ``config.type``, or the factory
            rejected the configuration.
    """
    with _FACTORIES_LOCK:
        factory = _FACTORIES.get(config.type)
        known = sorted(_FACTORIES)
    if factory is None:
        raise ConfigurationError(
            f"unknown event logger type {config.type!r}; registered types: {known}. "
            "Register custom loggers with register_event_logger()."
        )
    return factory(config)


class NullEventLogger:
    """A logger that drops every record."""

    def __init__(self, config: EventLoggerConfig | None = None):
        self.config = config or EventLoggerConfig(type="null", level="off")

    def open(self) -> None:
        """Nothing to open."""

    def append(self, record: EventLogRecord) -> None:
        """Drop the record."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


class FileEventLogger:
    """Appends one JSON line per accepted record to ``config.path``.

    The file is opened in append mode (on :meth:`open`, or lazily by the first
    :meth:`append`), so restarts extend the same log. All methods are thread-safe.

    Attributes:
        records_written: records written since creation.
        errors: records dropped because formatting or writing failed.
    """

    def __init__(self, config: EventLoggerConfig, *, clock: Callable[[], float] = time.monotonic):
        """Create the logger; the file is opened by :meth:`open` or the first append.

        Args:
            config: the logger's configuration; ``config.path`` is required unless the
                level is ``"off"``.
            clock: monotonic clock in seconds, for the ``"interval"`` flush policy.

        Raises:
            ConfigurationError: ``config.path`` is missing.
        """
        if config.path is None and config.level != "off":
            raise ConfigurationError(
                "the 'file' event logger needs EventLoggerConfig.path (the JSONL file to append to)"
            )
        self.config = config
        self.path: Path | None = Path(config.path) if config.path is not None else None
        self.records_written = 0
        self.errors = 0
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self._last_flush = clock()
        self._warned = False
        self._dirty = False  # records written since the last flush
        self._stop_flusher: threading.Event | None = None

    def __enter__(self) -> FileEventLogger:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the parent directories and open the file for appending.

        Raises:
            OSError: the file cannot be opened (only here; :meth:`append` never raises).
        """
        with self._lock:
            self._open_locked()

    def append(self, record: EventLogRecord) -> None:
        """Write ``record`` if the configuration accepts its event; never raises."""
        if not self.config.accepts(record.event):
            return
        try:
            line = json.dumps(record.to_json_dict(self.config.payload_limit), ensure_ascii=False)
        except Exception as exc:
            with self._lock:
                self._failed("format", record, exc)
            return
        with self._lock:
            try:
                file = self._open_locked()
                if file is None:
                    return
                file.write(line + "\n")
                self._dirty = True
                self.records_written += 1
                self._maybe_flush_locked(file)
            except Exception as exc:
                self._failed("write", record, exc)

    def flush(self) -> None:
        """Flush buffered records to the operating system; never raises."""
        with self._lock:
            if self._file is None:
                return
            try:
                self._flush_locked(self._file)
            except Exception as exc:
                self._failed("flush", None, exc)

    def close(self) -> None:
        """Flush and close the file; a later :meth:`append` reopens it. Never raises."""
        with self._lock:
            file, self._file = self._file, None
            if self._stop_flusher is not None:
                self._stop_flusher.set()
                self._stop_flusher = None
            if file is None:
                return
            try:
                file.close()
            except Exception as exc:
                self._failed("close", None, exc)

    def _open_locked(self) -> IO[str] | None:
        if self._file is None and self.path is not None and self.config.level != "off":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._last_flush = self._clock()
            self._start_flusher_locked()
        return self._file

    def _start_flusher_locked(self) -> None:
        """Under the ``"interval"`` policy, a thread flushes what was written at every
        interval, so lines reach the file on an idle worker too (and a killed process
        loses at most one interval)."""
        if self.config.flush != "interval" or self._stop_flusher is not None:
            return
        stop = self._stop_flusher = threading.Event()
        interval = max(self.config.flush_interval_seconds, 0.01)

        def flush_periodically() -> None:
            while not stop.wait(interval):
                with self._lock:
                    if self._dirty and self._file is not None and not stop.is_set():
                        try:
                            self._flush_locked(self._file)
                        except Exception as exc:
                            self._failed("flush", None, exc)

        threading.Thread(
            target=flush_periodically, name="agentstream-eventlog-flush", daemon=True
        ).start()

    def _maybe_flush_locked(self, file: IO[str]) -> None:
        policy = self.config.flush
        if policy == "always" or (
            policy == "interval"
            and self._clock() - self._last_flush >= self.config.flush_interval_seconds
        ):
            self._flush_locked(file)

    def _flush_locked(self, file: IO[str]) -> None:
        file.flush()
        self._dirty = False
        self._last_flush = self._clock()

    def _failed(self, what: str, record: EventLogRecord | None, exc: Exception) -> None:
        """Count a failure and warn about the first one (called with the lock held)."""
        self.errors += 1
        if self._warned:
            return
        self._warned = True
        about = ""
        if record is not None:
            about = f" (key {record.key!r}, seq {record.seq}, event {record.event.id})"
        logger.warning(
            "event log %s failed for %s%s: %s: %s; dropping records, further failures are "
            "only counted (FileEventLogger.errors)",
            what,
            self.path,
            about,
            type(exc).__name__,
            exc,
        )


register_event_logger("file", FileEventLogger)
register_event_logger("null", NullEventLogger)
