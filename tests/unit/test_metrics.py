"""Tests of the Prometheus metrics: built-ins, isolation, user metric groups."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from agentstream.api.metrics import Counter, Gauge, Histogram, MetricGroup
from agentstream.errors import ConfigurationError
from agentstream.observability.metrics import METRICS_CONTENT_TYPE, RuntimeMetrics, render


@pytest.fixture
def metrics() -> RuntimeMetrics:
    return RuntimeMetrics()


def test_builtin_metrics_record_values(metrics: RuntimeMetrics) -> None:
    sample = metrics.registry.get_sample_value
    metrics.events_processed.labels(event_type="myapp.Ask").inc()
    metrics.events_processed.labels(event_type="myapp.Ask").inc(2)
    metrics.actions_executed.labels(action="plan").inc()
    metrics.action_duration_seconds.labels(action="plan").observe(0.3)
    metrics.action_failures.labels(action="plan").inc()
    metrics.actions_replayed.labels(action="plan").inc()
    metrics.durable_calls_replayed.labels(action="plan").inc(3)
    metrics.pending_inputs.set(4)
    metrics.busy_keys.inc()
    metrics.busy_keys.inc()
    metrics.busy_keys.dec()
    metrics.dead_letters.labels(reason="decode").inc()
    metrics.watermark_ms.labels(partition="0").set(1_714_564_800_000)
    metrics.consumer_lag.labels(topic="in", partition="1").set(17)
    metrics.outputs_emitted.inc()

    assert sample("agentstream_events_processed_total", {"event_type": "myapp.Ask"}) == 3
    assert sample("agentstream_actions_executed_total", {"action": "plan"}) == 1
    assert sample("agentstream_action_duration_seconds_count", {"action": "plan"}) == 1
    assert sample("agentstream_action_duration_seconds_sum", {"action": "plan"}) == 0.3
    assert (
        sample("agentstream_action_duration_seconds_bucket", {"action": "plan", "le": "0.5"}) == 1
    )
    assert sample("agentstream_action_failures_total", {"action": "plan"}) == 1
    assert sample("agentstream_actions_replayed_total", {"action": "plan"}) == 1
    assert sample("agentstream_durable_calls_replayed_total", {"action": "plan"}) == 3
    assert sample("agentstream_pending_inputs") == 4
    assert sample("agentstream_busy_keys") == 1
    assert sample("agentstream_dead_letters_total", {"reason": "decode"}) == 1
    assert sample("agentstream_watermark_ms", {"partition": "0"}) == 1_714_564_800_000
    assert sample("agentstream_consumer_lag", {"topic": "in", "partition": "1"}) == 17
    assert sample("agentstream_outputs_emitted_total") == 1


def test_two_instances_do_not_clash() -> None:
    first, second = RuntimeMetrics(), RuntimeMetrics()
    first.outputs_emitted.inc(5)
    second.outputs_emitted.inc()
    first.agent_group("a").counter("calls").inc()
    second.agent_group("a").gauge("calls").set(2)  # separate registries: no conflict
    assert first.registry.get_sample_value("agentstream_outputs_emitted_total") == 5
    assert second.registry.get_sample_value("agentstream_outputs_emitted_total") == 1


def test_shared_registry_needs_a_distinct_namespace() -> None:
    registry = CollectorRegistry()
    RuntimeMetrics(registry)
    with pytest.raises(ConfigurationError, match="distinct namespace"):
        RuntimeMetrics(registry)
    other = RuntimeMetrics(registry, namespace="other")
    other.outputs_emitted.inc()
    assert registry.get_sample_value("other_outputs_emitted_total") == 1
    # The failed attempt left nothing half-registered behind.
    RuntimeMetrics(registry, namespace="third")


def test_invalid_namespace() -> None:
    with pytest.raises(ConfigurationError, match="metrics namespace"):
        RuntimeMetrics(namespace="agent-stream")


def test_render_produces_exposition_text(metrics: RuntimeMetrics) -> None:
    metrics.events_processed.labels(event_type="E").inc()
    text = render(metrics.registry).decode()
    assert 'agentstream_events_processed_total{event_type="E"} 1.0' in text
    assert "# HELP agentstream_busy_keys" in text
    assert METRICS_CONTENT_TYPE.startswith("text/plain")


def test_agent_group_metrics(metrics: RuntimeMetrics) -> None:
    group = metrics.agent_group("support")
    assert isinstance(group, MetricGroup)
    counter = group.counter("tickets", "tickets seen")
    gauge = group.gauge("open_tickets")
    histogram = group.histogram("ticket_size_bytes", buckets=[10, 100, 1000])
    assert isinstance(counter, Counter)
    assert isinstance(gauge, Gauge)
    assert isinstance(histogram, Histogram)
    counter.inc()
    counter.inc(n=2)
    gauge.set(5)
    gauge.inc(n=2)
    gauge.dec()
    histogram.observe(50)

    sample = metrics.registry.get_sample_value
    labels = {"agent": "support"}
    assert sample("agentstream_user_tickets_total", labels) == 3
    assert sample("agentstream_user_open_tickets", labels) == 6
    assert sample("agentstream_user_ticket_size_bytes_bucket", {**labels, "le": "100.0"}) == 1
    assert sample("agentstream_user_ticket_size_bytes_bucket", {**labels, "le": "10.0"}) == 0
    # Asking again returns the same series.
    group.counter("tickets").inc()
    assert sample("agentstream_user_tickets_total", labels) == 4


def test_action_groups_and_sub_groups_become_labels(metrics: RuntimeMetrics) -> None:
    plan = metrics.action_group("support", "plan")
    answer = metrics.action_group("support", "answer")
    plan.counter("llm_calls").inc()
    answer.counter("llm_calls").inc(4)
    plan.sub_group("model", "m1").histogram("llm_latency_seconds").observe(1.5)
    plan.sub_group("model", "m2").histogram("llm_latency_seconds").observe(0.5)
    nested = plan.sub_group("model", "m1").sub_group("region", "eu")
    nested.gauge("queue").set(9)

    sample = metrics.registry.get_sample_value
    assert sample("agentstream_user_llm_calls_total", {"agent": "support", "action": "plan"}) == 1
    assert sample("agentstream_user_llm_calls_total", {"agent": "support", "action": "answer"}) == 4
    m1 = {"agent": "support", "action": "plan", "model": "m1"}
    assert sample("agentstream_user_llm_latency_seconds_sum", m1) == 1.5
    assert sample("agentstream_user_llm_latency_seconds_count", {**m1, "model": "m2"}) == 1
    assert sample("agentstream_user_queue", {**m1, "region": "eu"}) == 9


def test_same_labels_in_another_order_are_the_same_metric(metrics: RuntimeMetrics) -> None:
    group = metrics.agent_group("a")
    group.sub_group("x", "1").sub_group("y", "2").counter("hits").inc()
    group.sub_group("y", "2").sub_group("x", "1").counter("hits").inc()
    labels = {"agent": "a", "x": "1", "y": "2"}
    assert metrics.registry.get_sample_value("agentstream_user_hits_total", labels) == 2


def test_same_name_with_another_kind_is_an_error(metrics: RuntimeMetrics) -> None:
    group = metrics.agent_group("a")
    group.counter("calls")
    with pytest.raises(ConfigurationError, match="'calls' is already a counter"):
        group.gauge("calls")
    with pytest.raises(ConfigurationError, match="'calls' is already a counter"):
        metrics.action_group("a", "b").histogram("calls")


def test_same_name_with_other_labels_is_an_error(metrics: RuntimeMetrics) -> None:
    metrics.agent_group("a").counter("calls")
    with pytest.raises(ConfigurationError, match=r"created with labels \['agent'\]"):
        metrics.action_group("a", "plan").counter("calls")
    with pytest.raises(ConfigurationError, match="same sub_group names"):
        metrics.agent_group("a").sub_group("model", "m").counter("calls")


def test_histogram_buckets_must_agree(metrics: RuntimeMetrics) -> None:
    group = metrics.agent_group("a")
    group.histogram("size", buckets=[1, 2])
    group.histogram("size")  # no buckets requested: reuse
    group.histogram("size", buckets=[1, 2, float("inf")])  # the same buckets
    with pytest.raises(ConfigurationError, match="buckets"):
        group.histogram("size", buckets=[1, 5])
    with pytest.raises(ConfigurationError, match="strictly increasing"):
        group.histogram("other", buckets=[5, 1])


def test_series_clash_between_names_is_an_error(metrics: RuntimeMetrics) -> None:
    group = metrics.agent_group("a")
    group.histogram("latency")
    with pytest.raises(ConfigurationError, match="latency_count"):
        group.gauge("latency_count")


@pytest.mark.parametrize("name", ["", "1st", "with-dash", "dotted.name", "ünï", None])
def test_invalid_metric_names(metrics: RuntimeMetrics, name: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid metric name"):
        metrics.agent_group("a").counter(name)


@pytest.mark.parametrize("label", ["bad-label", "__reserved", "agent"])
def test_invalid_sub_group_labels(metrics: RuntimeMetrics, label: str) -> None:
    with pytest.raises(ConfigurationError, match="label"):
        metrics.agent_group("a").sub_group(label, "v")


def test_histogram_cannot_use_le_label(metrics: RuntimeMetrics) -> None:
    with pytest.raises(ConfigurationError, match="reserves it for histogram buckets"):
        metrics.agent_group("a").sub_group("le", "x").histogram("h")
