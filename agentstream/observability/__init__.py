"""Observability: the event log and Prometheus metrics.

- :mod:`agentstream.observability.eventlog` -- one record per processed event, written by
  a pluggable :class:`EventLogger` (JSON lines by default); the record and its on-disk
  form in :mod:`~agentstream.observability.eventlog_record`, the reader that turns the
  lines back into events in :mod:`~agentstream.observability.eventlog_reader`.
- :mod:`agentstream.observability.metrics` -- the runtime's built-in metrics, on
  prometheus-client; the metric groups agent authors use in
  :mod:`~agentstream.observability.metrics_user`.
"""

from __future__ import annotations

from agentstream.observability.eventlog import (
    EventLogFormatError,
    EventLogger,
    EventLoggerConfig,
    EventLoggerFactory,
    EventLogLevel,
    EventLogRecord,
    FileEventLogger,
    FlushPolicy,
    NullEventLogger,
    create_event_logger,
    parse_event_log_record,
    read_event_log,
    register_event_logger,
    registered_event_logger_types,
)
from agentstream.observability.metrics import (
    ACTION_DURATION_BUCKETS,
    METRICS_CONTENT_TYPE,
    PrometheusMetricGroup,
    RuntimeMetrics,
    render,
)

__all__ = [
    "ACTION_DURATION_BUCKETS",
    "METRICS_CONTENT_TYPE",
    "EventLogFormatError",
    "EventLogLevel",
    "EventLogRecord",
    "EventLogger",
    "EventLoggerConfig",
    "EventLoggerFactory",
    "FileEventLogger",
    "FlushPolicy",
    "NullEventLogger",
    "PrometheusMetricGroup",
    "RuntimeMetrics",
    "create_event_logger",
    "parse_event_log_record",
    "read_event_log",
    "register_event_logger",
    "registered_event_logger_types",
    "render",
]
