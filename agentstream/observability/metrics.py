"""Prometheus metrics: the runtime's built-in metrics and agent authors' metric groups.

Mirrors Flink Agents' ``BuiltInMetrics`` and ``FlinkAgentsMetricGroupImpl`` on
prometheus-client. Every :class:`RuntimeMetrics` owns its own ``CollectorRegistry`` unless
given one, so several runners in one process (tests, notebooks) do not clash.

Design note -- user metrics. Prometheus fixes a metric's label names when it is created,
while :class:`~agentstream.api.metrics.MetricGroup` lets authors add labels with
``sub_group``. A user metric ``name`` therefore becomes one Prometheus metric
``{namespace}_user_{name}`` whose label names are the group's (``agent``, ``action`` for
action groups, then one per ``sub_group``); the group hands out the child for its label
values::

    metrics.action_group("support", "classify").sub_group("model", "m1").counter("calls")
      -> agentstream_user_calls_total{agent="support", action="classify", model="m1"}

Metrics are cached by name; asking for a name again with another kind or other label
names raises :class:`~agentstream.errors.ConfigurationError`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as _PromCounter
from prometheus_client import Gauge as _PromGauge
from prometheus_client import Histogram as _PromHistogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from agentstream.api.metrics import Counter, Gauge, Histogram, MetricGroup
from agentstream.errors import ConfigurationError
from agentstream.observability.histogram import HistogramCounts

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

_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MetricKind = Literal["counter", "gauge", "histogram"]


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} {name!r}: use letters, digits and underscores, not starting "
            "with a digit (Prometheus naming rules)"
        )
    return name


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
        self.namespace = _check_name(namespace, "metrics namespace")
        self.registry = registry if registry is not None else CollectorRegistry()
        self._user_metrics: dict[str, _UserMetric] = {}
        self._lock = threading.Lock()
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
        self.keys_on_several_partitions: _PromCounter = make(
            _PromCounter,
            "keys_on_several_partitions",
            "Input records whose key this worker had seen on another partition (each "
            "partition's records of the key are processed as their own key).",
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
        return PrometheusMetricGroup(self, {"agent": str(agent_name)})

    def action_group(self, agent_name: str, action_name: str) -> MetricGroup:
        """The metric group of one action: labels ``agent`` and ``action``."""
        return PrometheusMetricGroup(self, {"agent": str(agent_name), "action": str(action_name)})

    def _user_metric(
        self,
        kind: _MetricKind,
        name: str,
        description: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] | None = None,
    ) -> MetricWrapperBase:
        """The Prometheus metric behind user metric ``name``, created on first use.

        Called by :class:`PrometheusMetricGroup`; not part of the public API.

        Args:
            kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
            name: the user's metric name (prefixed with ``{namespace}_user_``).
            description: help text (used when the metric is created).
            labelnames: the label names of the requesting group.
            buckets: histogram buckets; None for the defaults.

        Raises:
            ConfigurationError: invalid name; or ``name`` exists with another kind, other
                label names or other buckets; or it clashes with another metric's series.
        """
        _check_name(name, "metric name")
        full_name = f"{self.namespace}_user_{name}"
        labels = tuple(labelnames)
        wanted_buckets = _normalize_buckets(name, buckets) if kind == "histogram" else None
        with self._lock:
            existing = self._user_metrics.get(full_name)
            if existing is None:
                existing = self._create_user_metric(
                    kind, name, full_name, description, labels, wanted_buckets
                )
                self._user_metrics[full_name] = existing
                return existing.metric
        if existing.kind != kind:
            raise ConfigurationError(
                f"user metric {name!r} is already a {existing.kind}; it cannot also be a "
                f"{kind}. Use a different name."
            )
        if set(existing.labelnames) != set(labels):
            raise ConfigurationError(
                f"user metric {name!r} was created with labels {sorted(existing.labelnames)} "
                f"but is now requested with {sorted(labels)}. A metric must always come from "
                "groups with the same label names (agent vs action group, same sub_group "
                "names); use a different metric name."
            )
        if buckets is not None and wanted_buckets != existing.buckets:
            raise ConfigurationError(
                f"user histogram {name!r} was created with buckets {list(existing.buckets or ())}"
                f", not {list(wanted_buckets or ())}"
            )
        return existing.metric

    def _create_user_metric(
        self,
        kind: _MetricKind,
        name: str,
        full_name: str,
        description: str,
        labels: tuple[str, ...],
        buckets: tuple[float, ...] | None,
    ) -> _UserMetric:
        doc = description or f"User metric {name}."
        if kind == "histogram" and "le" in labels:
            raise ConfigurationError(
                f"user histogram {name!r} cannot have the label 'le' (sub_group name): "
                "Prometheus reserves it for histogram buckets"
            )
        metric: MetricWrapperBase
        try:
            if kind == "counter":
                metric = _PromCounter(full_name, doc, labels, registry=self.registry)
            elif kind == "gauge":
                metric = _PromGauge(full_name, doc, labels, registry=self.registry)
            elif kind == "histogram":
                metric = _PromHistogram(
                    full_name, doc, labels, registry=self.registry, buckets=buckets or ()
                )
            else:
                raise ConfigurationError(f"unknown metric kind {kind!r}")
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot create user {kind} {name!r} with labels {list(labels)}: {exc}. "
                "Choose another metric or label name."
            ) from exc
        return _UserMetric(kind, labels, buckets, metric)


def _normalize_buckets(name: str, buckets: Sequence[float] | None) -> tuple[float, ...]:
    bounds = [float(b) for b in (buckets or _PromHistogram.DEFAULT_BUCKETS)]
    if not bounds or bounds[-1] != math.inf:
        bounds.append(math.inf)
    if any(a >= b for a, b in pairwise(bounds)):
        raise ConfigurationError(
            f"buckets of histogram {name!r} must be strictly increasing, got {list(buckets or ())}"
        )
    return tuple(bounds)


@dataclass(frozen=True)
class _UserMetric:
    kind: _MetricKind
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] | None
    metric: MetricWrapperBase


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
        self._bounds = _normalize_buckets(name, buckets)
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


class PrometheusMetricGroup:
    """A :class:`~agentstream.api.metrics.MetricGroup` backed by :class:`RuntimeMetrics`.

    Attributes:
        labels: the group's label names and values, in the order they were added.
    """

    def __init__(self, metrics: RuntimeMetrics, labels: Mapping[str, str]):
        self._metrics = metrics
        self.labels: Mapping[str, str] = dict(labels)

    def __repr__(self) -> str:
        return f"PrometheusMetricGroup({dict(self.labels)!r})"

    def counter(self, name: str, description: str = "") -> Counter:
        """The counter ``name`` of this group, with the group's label values."""
        metric = self._metrics._user_metric("counter", name, description, list(self.labels))
        return _CounterChild(metric.labels(**self.labels))

    def gauge(self, name: str, description: str = "") -> Gauge:
        """The gauge ``name`` of this group, with the group's label values."""
        metric = self._metrics._user_metric("gauge", name, description, list(self.labels))
        return _GaugeChild(metric.labels(**self.labels))

    def histogram(
        self, name: str, description: str = "", buckets: Sequence[float] | None = None
    ) -> Histogram:
        """The histogram ``name`` of this group, with the group's label values."""
        metric = self._metrics._user_metric(
            "histogram", name, description, list(self.labels), buckets
        )
        return _HistogramChild(metric.labels(**self.labels))

    def sub_group(self, name: str, value: str) -> MetricGroup:
        """A group with one more label, ``name=value``.

        Raises:
            ConfigurationError: ``name`` is not a valid label name or the group has it.
        """
        _check_name(name, "label name")
        if name.startswith("__"):
            raise ConfigurationError(
                f"invalid label name {name!r}: names starting with '__' are reserved"
            )
        if name in self.labels:
            raise ConfigurationError(
                f"metric group {dict(self.labels)!r} already has the label {name!r}"
            )
        return PrometheusMetricGroup(self._metrics, {**self.labels, name: str(value)})


class _CounterChild:
    __slots__ = ("_child",)

    def __init__(self, child: Any):
        self._child = child

    def inc(self, n: float = 1) -> None:
        self._child.inc(n)


class _GaugeChild:
    __slots__ = ("_child",)

    def __init__(self, child: Any):
        self._child = child

    def set(self, v: float) -> None:
        self._child.set(v)

    def inc(self, n: float = 1) -> None:
        self._child.inc(n)

    def dec(self, n: float = 1) -> None:
        self._child.dec(n)


class _HistogramChild:
    __slots__ = ("_child",)

    def __init__(self, child: Any):
        self._child = child

    def observe(self, v: float) -> None:
        self._child.observe(v)
