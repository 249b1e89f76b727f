"""Prometheus metrics: the runtime's built-in metrics, in a registry of their own.

Mirrors Flink Agents' ``BuiltInMetrics`` on prometheus-client. Every
:class:`RuntimeMetrics` owns its own ``CollectorRegistry`` unless given one, so several
runners in one process (tests, notebooks) do not clash. The metric groups agent authors
use (``agent_group``, ``action_group``) are in :mod:`agentstream.observability.metrics_user`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as _PromCounter
from prometheus_client import Gauge as _PromGauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agentstream.api.metrics import MetricGroup
from agentstream.errors import ConfigurationError
from agentstream.observability.histogram import HistogramCounts
from agentstream.observability.metrics_user import (
    PrometheusMetricGroup,
    UserMetrics,
    check_name,
    normalize_buckets,
)

__all__ = [
    "ACTION_DURATION_BUCKETS",
    "METRICS_CONTENT_TYPE",
    "PrometheusMetricGroup",
    "RuntimeMetrics",
    "render",
]

METRICS_CONTENT_TYPE: str = CONTENT_TYPE_LATEST
"""The HTTP ``Content-Type`` of :func:`render`'s output."""

ACTION_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Buckets of ``action_duration_seconds``: actions range from microseconds to LLM minutes."""


def render(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text exposition format."""
    return generate_latest(registry)


class RuntimeMetrics:
    """The runtime's metrics, registered in one Prometheus registry.

    Attributes:
        registry: the ``CollectorRegistry`` holding every metric of this instance.
        namespace: prefix of every metric name.
        events_processed: Counter of processed events, by ``event_type``.
        actions_executed: Counter of action runs that actually executed, by ``action``.
        action_duration_seconds: Histogram of action run durations, by ``action``.
        action_failures: Counter of action runs that raised, by ``action``.
        actions_replayed: Counter of action runs skipped because their recorded state
            showed them completed, by ``action``.
        durable_calls_replayed: Counter of durable calls answered from the record, by
            ``action``.
        pending_inputs: Gauge of inputs waiting for their key to become free.
        busy_keys: Gauge of keys currently being processed.
        dead_letters: Counter of records sent to the dead-letter topic, by ``reason``
            (e.g. ``"decode"``, ``"action"``).
        watermark_ms: Gauge of event-time progress (ms since epoch), by ``partition``.
        consumer_lag: Gauge of records not yet consumed, by ``topic`` and ``partition``.
        outputs_emitted: Counter of outputs written.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "agentstream"):
        """Create and register the built-in metrics.

        Args:
            registry: where to register; a fresh ``CollectorRegistry`` when None.
            namespace: prefix of every metric name.

        Raises:
            ConfigurationError: the namespace is not a valid metric name, or ``registry``
                already holds metrics with these names.
        """
        self.namespace = check_name(namespace, "metrics namespace")
        self.registry = registry if registry is not None else CollectorRegistry()
        self._user_metrics = UserMetrics(self.registry, self.namespace)
        self._on_collect = _BeforeCollect()
        self.registry.register(self._on_collect)  # first: runs before any metric is read
        created: list[Any] = [self._on_collect]

        def make(cls: type[Any], name: str, doc: str, *labels: str, **kwargs: Any) -> Any:
            try:
                metric = cls(f"{namespace}_{name}", doc, labels, registry=self.registry, **kwargs)
            except ValueError as exc:
                for done in created:
                    self.registry.unregister(done)
                raise ConfigurationError(
                    f"cannot register metric {namespace}_{name}: {exc}. Each RuntimeMetrics "
                    "needs its own registry (the default) or a distinct namespace."
                ) from exc
            created.append(metric)
            return metric

        self.events_processed: _PromCounter = make(
            _PromCounter, "events_processed", "Events processed, by event type.", "event_type"
        )
        self.actions_executed: _PromCounter = make(
            _PromCounter, "actions_executed", "Action runs executed, by action.", "action"
        )
        self.action_duration_seconds: LoopHistogram = make(
            LoopHistogram,
            "action_duration_seconds",
            "Duration of action runs in seconds, by action.",
            "action",
            buckets=ACTION_DURATION_BUCKETS,
        )
        self.action_failures: _PromCounter = make(
            _PromCounter, "action_failures", "Action runs that raised, by action.", "action"
        )
        self.actions_replayed: _PromCounter = make(
            _PromCounter,
            "actions_replayed",
            "Action runs skipped on replay because they had completed, by action.",
            "action",
        )
        self.durable_calls_replayed: _PromCounter = make(
            _PromCounter,
            "durable_calls_replayed",
            "Durable calls answered from their recorded result, by action.",
            "action",
        )
        self.pending_inputs: _PromGauge = make(
            _PromGauge, "pending_inputs", "Inputs waiting for their key to become free."
        )
        self.busy_keys: _PromGauge = make(
            _PromGauge, "busy_keys", "Keys with an input being processed."
        )
        self.dead_letters: _PromCounter = make(
            _PromCounter,
            "dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            "reason",
        )
        self.watermark_ms: _PromGauge = make(
            _PromGauge,
            "watermark_ms",
            "Event-time progress in ms since the epoch, by input partition.",
            "partition",
        )
        self.consumer_lag: _PromGauge = make(
            _PromGauge,
            "consumer_lag",
            "Records not yet consumed, by topic and partition.",
            "topic",
            "partition",
        )
        self.outputs_emitted: _PromCounter = make(
            _PromCounter, "outputs_emitted", "Outputs written to the output topic."
        )
        self.action_timeouts: _PromCounter = make(
            _PromCounter,
            "action_timeouts",
            "Action runs stopped because they ran past their timeout, by action.",
            "action",
        )
        self.event_limit_exceeded: _PromCounter = make(
            _PromCounter,
            "event_limit_exceeded",
            "Inputs stopped because they made more events than max_events_per_input.",
        )
        self.send_failures: _PromCounter = make(
            _PromCounter,
            "send_failures",
            "Sent events (outputs or routed events) that could not be delivered, by action.",
            "action",
        )
        self.unhandled_events: _PromCounter = make(
            _PromCounter,
            "unhandled_events",
            "Sent events that no action listens to (and are not outputs), dropped, by event type.",
            "event_type",
        )
        self.keys_on_several_partitions: _PromCounter = make(
            _PromCounter,
            "keys_on_several_partitions",
            "Input records whose key this worker had seen on another partition (each "
            "partition's records of the key are processed as their own key).",
        )
        self.migration_in_progress: _PromGauge = make(
            _PromGauge,
            "migration_in_progress",
            "1 while the app's keys move to a grown input topic's partitions.",
        )
        self.migration_keys_moved: _PromCounter = make(
            _PromCounter,
            "migration_keys_moved",
            "Keys this worker handed, with their state, to their new partition.",
        )
        self.migration_keys_to_move: _PromGauge = make(
            _PromGauge,
            "migration_keys_to_move",
            "Keys of this worker's partitions still to hand to their new partition.",
        )
        self.migration_stale_inputs: _PromCounter = make(
            _PromCounter,
            "migration_stale_inputs",
            "Inputs that landed on their key's old partition after a migration began "
            "(producers with stale metadata), handed to the key's new partition.",
        )
        self.broker_connected: _PromGauge = make(
            _PromGauge, "broker_connected", "1 while the broker answers, 0 while it does not."
        )

    def on_collect(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` whenever the registry is collected, before any metric is read.

        The runtime counts on its hot path in plain ints and moves them into the
        Prometheus metrics in such a hook, so every reader (``/metrics``, tests reading
        the registry) sees current values.
        """
        self._on_collect.hooks.append(hook)

    def agent_group(self, agent_name: str) -> MetricGroup:
        """The metric group of an agent: its metrics carry ``agent=agent_name``."""
        return PrometheusMetricGroup(self._user_metrics, {"agent": str(agent_name)})

    def action_group(self, agent_name: str, action_name: str) -> MetricGroup:
        """The metric group of one action: labels ``agent`` and ``action``."""
        return PrometheusMetricGroup(
            self._user_metrics, {"agent": str(agent_name), "action": str(action_name)}
        )


class _BeforeCollect(Collector):
    """Runs hooks when the registry is collected; yields no metrics of its own."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], None]] = []

    def collect(self) -> Iterator[Metric]:
        for hook in self.hooks:
            hook()
        return iter(())


class LoopHistogram(Collector):
    """A labelled histogram observed from the event loop's thread only, without locks.

    prometheus-client's ``Histogram`` takes a lock per observation; the runtime observes
    one per action run, so its built-in histogram is this collector instead (same
    exposition: ``_bucket``, ``_count``, ``_sum``). Children support ``observe``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None,
        buckets: Sequence[float],
    ):
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = normalize_buckets(name, buckets)
        self._children: dict[tuple[str, ...], HistogramCounts] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: Any, **by_name: Any) -> HistogramCounts:
        """The child of these label values (created on first use)."""
        key = (
            tuple(str(by_name[n]) for n in self._labelnames)
            if by_name
            else tuple(str(v) for v in values)
        )
        if len(key) != len(self._labelnames):
            raise ValueError(f"{self._name} takes the labels {list(self._labelnames)}")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramCounts(self._bounds)
        return child

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts = list(child.counts)
            cumulative, total = [], 0
            for bound, count in zip(self._bounds, counts, strict=True):
                total += count
                cumulative.append(("+Inf" if bound == math.inf else repr(bound), total))
            family.add_metric(list(values), cumulative, child.sum)
        yield family
