"""The operator's hot-path counts, and what the metrics read of the operator."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Hashable
from typing import Any

from agentstream.api.events import Event
from agentstream.observability.histogram import HistogramCounts
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.eventtime import EventTimeTracker

__all__ = ["RuntimeCounts"]


class RuntimeCounts:
    """The operator's hot-path counts, and what the metrics read of the operator.

    The runtime counts in plain ints (a Prometheus ``inc`` takes a lock) and :meth:`flush`
    moves the counts into the metrics whenever the registry is collected. The metrics'
    hooks hold this object, not the operator: the operator holds the metrics, so a hook
    bound to it would close a reference cycle, and a dropped operator, with all the state
    it keeps, would then live on until a full pass of the cycle collector.
    """

    __slots__ = ("actions", "children", "durations", "event_time", "events", "metrics",
                 "outputs", "pending", "runners")  # fmt: skip

    def __init__(
        self,
        metrics: RuntimeMetrics,
        event_time: EventTimeTracker,
        runners: dict[Hashable, asyncio.Task[None]],
    ):
        self.metrics = metrics
        self.event_time = event_time
        self.runners = runners
        self.children: dict[tuple[int, str], Any] = {}
        self.durations: dict[str, HistogramCounts] = {}
        self.events: defaultdict[type[Event], int] = defaultdict(int)
        self.actions: defaultdict[str, int] = defaultdict(int)
        self.outputs = 0
        self.pending = 0

    def register(self) -> None:
        metrics = self.metrics
        metrics.busy_keys.set_function(self.busy_keys)
        metrics.pending_inputs.set_function(self.pending_inputs)
        metrics.on_collect(self.flush)

    def busy_keys(self) -> int:
        return len(self.runners)

    def pending_inputs(self) -> int:
        return self.pending

    def flush(self) -> None:
        metrics = self.metrics
        events, self.events = self.events, defaultdict(int)
        for event_type, count in events.items():
            self.child(metrics.events_processed, event_type.type_name()).inc(count)
        actions, self.actions = self.actions, defaultdict(int)
        for name, count in actions.items():
            self.child(metrics.actions_executed, name).inc(count)
        if self.outputs:
            metrics.outputs_emitted.inc(self.outputs)
            self.outputs = 0
        for partition in self.event_time.partitions():
            watermark = self.event_time.watermark(partition)
            if watermark is not None:
                self.child(metrics.watermark_ms, str(partition)).set(watermark)

    def duration(self, action: str) -> HistogramCounts:
        """The ``action_duration_seconds`` child of ``action`` (one observation per run)."""
        counts = self.durations.get(action)
        if counts is None:
            counts = self.durations[action] = self.metrics.action_duration_seconds.labels(action)
        return counts

    def child(self, metric: Any, value: str) -> Any:
        """``metric.labels(value)``, cached: prometheus' own lookup is slow on a hot path."""
        key = (id(metric), value)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = metric.labels(value)
        return child
