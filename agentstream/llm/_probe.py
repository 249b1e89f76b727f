"""What a toolkit durable call reports: whether it really ran, and its metric group."""

from __future__ import annotations

from agentstream.api.context import RunnerContext
from agentstream.api.metrics import MetricGroup

__all__ = ["LATENCY_BUCKETS", "Probe", "saved_by_replay"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Probe:
    """Tells an action whether its durable call ran (else it was answered from the record)
    and carries the metric group the call reports to."""

    __slots__ = ("called", "group")

    def __init__(self, group: MetricGroup):
        self.group = group
        self.called = False


def saved_by_replay(ctx: RunnerContext, kind: str) -> None:
    """Count a call answered from the record (``kind``: ``model`` or ``tool``)."""
    ctx.action_metric_group.sub_group("kind", kind).counter(
        "llm_calls_saved", "Model and tool calls answered from the record, not made again."
    ).inc()
