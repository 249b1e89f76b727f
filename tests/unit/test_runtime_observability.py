"""The runtime's event log and metrics (issue 2, behaviours 8 and 9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.observability.eventlog import (
    EventLoggerConfig,
    create_event_logger,
    read_event_log,
)
from agentstream.testing import InputRecord, LocalRunner


class Thought(Event):
    text: str


class Thinker(Agent):
    @action(InputEvent)
    def think(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.action_metric_group.counter("thoughts").inc()
        ctx.agent_metric_group.sub_group("model", "tiny").histogram("tokens").observe(12)
        ctx.send_event(Thought(text=f"about {event.input}"))

    @action(Thought)
    async def say(event: Thought, ctx: RunnerContext) -> None:
        await asyncio.sleep(0)
        ctx.send_event(OutputEvent(output=event.text))


def test_event_log_has_one_record_per_processed_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    logger = create_event_logger(EventLoggerConfig(path=str(path), flush="always"))
    LocalRunner(Thinker(), event_logger=logger).run(
        [InputRecord("k", "tea", id="in-1", timestamp=42)]
    )
    logger.close()
    records = list(read_event_log(path))
    assert [type(r.event).__name__ for r in records] == ["InputEvent", "Thought", "OutputEvent"]
    assert [r.action for r in records] == [None, "think", "say"]
    assert all(r.key == "k" and r.seq == 1 for r in records)
    thought = records[1].event
    assert isinstance(thought, Thought) and thought.text == "about tea"
    assert thought.parent_id == "in-1" and records[2].event.parent_id == thought.id
    assert records[2].event.source_timestamp == 42


@pytest.mark.no_always_replay("user metrics count the replay check's re-runs too (docs/toolkit.md)")
def test_builtin_and_user_metrics() -> None:
    runner = LocalRunner(Thinker())
    runner.run([("a", 1), ("b", 2), ("a", 3)])
    value = runner.metrics.registry.get_sample_value
    assert value("agentstream_actions_executed_total", {"action": "think"}) == 3
    assert value("agentstream_actions_executed_total", {"action": "say"}) == 3
    assert value("agentstream_action_duration_seconds_count", {"action": "say"}) == 3
    assert value("agentstream_events_processed_total", {"event_type": Thought.type_name()}) == 3
    assert value("agentstream_outputs_emitted_total") == 3
    assert value("agentstream_busy_keys") == 0 and value("agentstream_pending_inputs") == 0
    assert value("agentstream_user_thoughts_total", {"agent": "Thinker", "action": "think"}) == 3
    assert value("agentstream_user_tokens_count", {"agent": "Thinker", "model": "tiny"}) == 3
