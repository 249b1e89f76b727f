"""The event log as a user reads it (issue 16): flushed on an idle worker, replays marked,
durable calls logged, one input's tree printed by ``agentstream events``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentstream import ActionExecutionError, Agent, Event, InputEvent, OutputEvent, RunnerContext
from agentstream import action as declare
from agentstream.observability.eventlog import EventLoggerConfig, EventLogRecord, FileEventLogger
from agentstream.service.cli import main
from agentstream.testing import InMemoryActionStateStore, LocalRunner


def test_an_idle_logger_flushes_within_its_interval(tmp_path: Path) -> None:
    """Scenario: one record appended, then nothing (an idle worker). We expect: the line
    reaches the file within the flush interval, with no further append or flush call."""
    path = tmp_path / "events.jsonl"
    logger = FileEventLogger(EventLoggerConfig(path=path, flush_interval_seconds=0.05))
    logger.open()
    try:
        logger.append(EventLogRecord(time.time(), "k", 1, InputEvent(input="x", id="i-1")))
        deadline = time.monotonic() + 5
        while not path.read_text():
            assert time.monotonic() < deadline, "the line never reached the file"
            time.sleep(0.01)
        assert json.loads(path.read_text())["id"] == "i-1"
    finally:
        logger.close()


class Planned(Event):
    plan: str


def plan_for(text: str) -> str:
    return f"plan for {text}"


async def answer(plan: str) -> str:
    return f"answer to {plan}"


class Crashy(Agent):
    """``plan`` completes; ``act`` makes a durable call, then crashes the first time."""

    @declare(InputEvent)
    def plan(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Planned(plan=ctx.durable_execute(plan_for, str(event.input))))

    @declare(Planned)
    async def act(event: Planned, ctx: RunnerContext) -> None:
        reply = await ctx.durable_execute_async(answer, event.plan)
        if ctx.get_resource("crash"):
            raise RuntimeError("worker died here")
        ctx.send_event(OutputEvent(output=reply))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.no_always_replay("counts the event-log lines of each action run")
def test_replayed_actions_are_marked_and_durable_calls_logged(tmp_path: Path) -> None:
    """Scenario: an input whose second action crashes after a durable call, then the same
    input again over the same action state (a restarted worker). We expect: the log has
    each durable call (function, digest, latency, outcome ok); after the restart the first
    action's sent event is marked replayed and both calls are "replayed"; and `agentstream
    events` prints the input's tree, event -> action -> sent events and calls."""
    path = tmp_path / "events.jsonl"
    store = InMemoryActionStateStore()
    config = EventLoggerConfig(path=path, flush="always")
    with FileEventLogger(config) as logger:
        crashing = LocalRunner(Crashy().add_resource("crash", True), store, logger)
        with pytest.raises(ActionExecutionError):
            crashing.run([("k", "hi")])
        first = _lines(path)
        recovered = LocalRunner(Crashy().add_resource("crash", False), store, logger)
        assert recovered.run([("k", "hi")]) == [("k", "answer to plan for hi")]
    second = _lines(path)[len(first) :]

    calls = [line for line in first if line["event_type"].endswith("DurableCallLogged")]
    assert [(c["action"], c["payload"]["outcome"]) for c in calls] == [
        ("plan", "ok"),
        ("act", "ok"),
    ]
    assert calls[0]["payload"]["function"].endswith("plan_for")
    assert calls[0]["payload"]["args_digest"] and calls[0]["payload"]["latency_ms"] >= 0
    assert not any(line.get("replayed") for line in first)

    planned = [line for line in second if line["event_type"].endswith("Planned")]
    assert len(planned) == 1 and planned[0]["replayed"] is True
    again = [line for line in second if line["event_type"].endswith("DurableCallLogged")]
    assert [(c["action"], c["payload"]["outcome"]) for c in again] == [("act", "replayed")]
    output = [line for line in second if line["event_type"].endswith("OutputEvent")]
    assert len(output) == 1 and "replayed" not in output[0]

    shown = CliRunner().invoke(main, ["events", str(path), "--key", "k"])
    assert shown.exit_code == 0, shown.output
    tree = shown.output
    assert "key 'k' input 1" in tree
    assert 'InputEvent "hi"' in tree and "└─ plan" in tree
    assert "Planned" in tree and "replayed" in tree and "└─ act" in tree
    assert "durable call #0" in tree and "plan_for -> ok" in tree
    assert 'OutputEvent "answer to plan for hi"' in tree
    assert tree.index("└─ plan") < tree.index("Planned") < tree.index("└─ act")
    missing = CliRunner().invoke(main, ["events", str(path), "--key", "k", "--seq", "7"])
    assert missing.exit_code == 1 and "has no input 7" in missing.output
