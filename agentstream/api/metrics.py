"""Metric types agent authors see: counters, gauges, histograms, grouped by labels.

This is the agent-facing side of Flink Agents' ``FlinkAgentsMetricGroup``. An action gets a
:class:`MetricGroup` (one per agent, and one per agent and action); metrics created in it
carry the group's labels. ``sub_group(name, value)`` adds one more label. The runtime backs
these protocols with Prometheus (``agentstream.observability.metrics``); nothing here
depends on a metrics library.

Example::

    group = ctx.action_metric_group
    group.counter("tool_calls", "tool calls made").inc()
    group.sub_group("model", "gpt-4o").histogram("llm_latency_seconds").observe(1.7)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Counter", "Gauge", "Histogram", "MetricGroup"]


@runtime_checkable
class Counter(Protocol):
    """A value that only goes up (requests made, tokens spent)."""

    def inc(self, n: float = 1) -> None:
        """Add ``n`` (must be >= 0)."""


@runtime_checkable
class Gauge(Protocol):
    """A value that goes up and down (queue length, temperature)."""

    def set(self, v: float) -> None:
        """Set the value to ``v``."""

    def inc(self, n: float = 1) -> None:
        """Add ``n``."""

    def dec(self, n: float = 1) -> None:
        """Subtract ``n``."""


@runtime_checkable
class Histogram(Protocol):
    """A distribution of observed values (latencies, sizes), counted in buckets."""

    def observe(self, v: float) -> None:
        """Record one observation ``v``."""


@runtime_checkable
class MetricGroup(Protocol):
    """Creates metrics that carry this group's labels.

    Asking twice for the same name and kind in the same group returns the same metric.
    A name is one metric across all groups, so it must always be used with the same kind
    and the same label names (the same chain of ``sub_group`` names).
    """

    def counter(self, name: str, description: str = "") -> Counter:
        """The counter ``name`` of this group.

        Args:
            name: metric name: letters, digits and underscores, not starting with a digit.
            description: help text shown by the metrics endpoint.
        """
        ...

    def gauge(self, name: str, description: str = "") -> Gauge:
        """The gauge ``name`` of this group (see :meth:`counter` for the arguments)."""
        ...

    def histogram(
        self, name: str, description: str = "", buckets: Sequence[float] | None = None
    ) -> Histogram:
        """The histogram ``name`` of this group.

        Args:
            name: metric name (see :meth:`counter`).
            description: help text.
            buckets: upper bounds of the buckets; None uses the backend's defaults.
        """
        ...

    def sub_group(self, name: str, value: str) -> MetricGroup:
        """A group with this group's labels plus the label ``name=value``."""
        ...
