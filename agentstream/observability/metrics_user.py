"""Agent authors' metrics: the metric groups actions use, on prometheus-client.

Mirrors Flink Agents' ``FlinkAgentsMetricGroupImpl``. :class:`UserMetrics` creates and
caches the Prometheus metrics behind the groups; :class:`RuntimeMetrics
<agentstream.observability.metrics.RuntimeMetrics>` owns one, in its registry.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _PromCounter
from prometheus_client import Gauge as _PromGauge
from prometheus_client import Histogram as _PromHistogram
from prometheus_client.metrics import MetricWrapperBase

from agentstream.api.metrics import Counter, Gauge, Histogram, MetricGroup
from agentstream.errors import ConfigurationError

__all__ = ["PrometheusMetricGroup", "UserMetrics"]

_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MetricKind = Literal["counter", "gauge", "histogram"]


def check_name(name: Any, what: str) -> str:
    """``name`` if Prometheus accepts it as a metric or label name; else ConfigurationError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} {name!r}: use letters, digits and underscores, not starting "
            "with a digit (Prometheus naming rules)"
        )
    return name


def normalize_buckets(name: str, buckets: Sequence[float] | None) -> tuple[float, ...]:
    """Histogram ``name``'s bucket bounds, strictly increasing and ending in +Inf."""
    bounds = [float(b) for b in (buckets or _PromHistogram.DEFAULT_BUCKETS)]
    if not bounds or bounds[-1] != math.inf:
        bounds.append(math.inf)
    if any(a >= b for a, b in pairwise(bounds)):
        raise ConfigurationError(
            f"buckets of histogram {name!r} must be strictly increasing, got {list(buckets or ())}"
        )
    return tuple(bounds)


class UserMetrics:
    """The user metrics of one registry: ``{namespace}_user_<name>``, created on first use.

    Attributes:
        registry: where the metrics are registered.
        namespace: prefix of every metric name.
    """

    def __init__(self, registry: CollectorRegistry, namespace: str):
        self.registry = registry
        self.namespace = namespace
        self._metrics: dict[str, _UserMetric] = {}
        self._lock = threading.Lock()

    def metric(
        self,
        kind: _MetricKind,
        name: str,
        description: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] | None = None,
    ) -> MetricWrapperBase:
        """The Prometheus metric behind user metric ``name``, created on first use.

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
        check_name(name, "metric name")
        full_name = f"{self.namespace}_user_{name}"
        labels = tuple(labelnames)
        wanted_buckets = normalize_buckets(name, buckets) if kind == "histogram" else None
        with self._lock:
            existing = self._metrics.get(full_name)
            if existing is None:
                existing = self._create(kind, name, full_name, description, labels, wanted_buckets)
                self._metrics[full_name] = existing
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

    def _create(
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


@dataclass(frozen=True)
class _UserMetric:
    kind: _MetricKind
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...] | None
    metric: MetricWrapperBase


class PrometheusMetricGroup:
    """A :class:`~agentstream.api.metrics.MetricGroup` backed by :class:`UserMetrics`.

    Attributes:
        labels: the group's label names and values, in the order they were added.
    """

    def __init__(self, metrics: UserMetrics, labels: Mapping[str, str]):
        self._metrics = metrics
        self.labels: Mapping[str, str] = dict(labels)

    def __repr__(self) -> str:
        return f"PrometheusMetricGroup({dict(self.labels)!r})"

    def counter(self, name: str, description: str = "") -> Counter:
        """The counter ``name`` of this group, with the group's label values."""
        metric = self._metrics.metric("counter", name, description, list(self.labels))
        return _CounterChild(metric.labels(**self.labels))

    def gauge(self, name: str, description: str = "") -> Gauge:
        """The gauge ``name`` of this group, with the group's label values."""
        metric = self._metrics.metric("gauge", name, description, list(self.labels))
        return _GaugeChild(metric.labels(**self.labels))

    def histogram(
        self, name: str, description: str = "", buckets: Sequence[float] | None = None
    ) -> Histogram:
        """The histogram ``name`` of this group, with the group's label values."""
        metric = self._metrics.metric("histogram", name, description, list(self.labels), buckets)
        return _HistogramChild(metric.labels(**self.labels))

    def sub_group(self, name: str, value: str) -> MetricGroup:
        """A group with one more label, ``name=value``.

        Raises:
            ConfigurationError: ``name`` is not a valid label name or the group has it.
        """
        check_name(name, "label name")
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
