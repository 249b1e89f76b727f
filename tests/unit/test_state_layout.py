"""Memory stored apart from the bookkeeping: a finish cut in half by a crash (issue 15).

The changelogged backend writes an input's memory paths before the key record that
finishes the input, so a crash can leave some of the input's memory written while the
key record still names the input as current. Recovery re-runs the input over that memory.
"""

from __future__ import annotations

import asyncio

import pytest

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.runtime.records import InMemoryKeyState, InputRecord, KeyRecord
from agentstream.testing import InMemoryActionStateStore, LocalRunner


class Noted(Event):
    n: int


class Reshape(Agent):
    """Bumps a counter, writes a nested path, then replaces its parent by a plain value."""

    def __init__(self, calls: list[str]):
        super().__init__()
        self.add_resource("calls", calls)

    @action(InputEvent)
    def note(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.get_resource("calls").append("note")
        memory = ctx.short_term_memory
        n = (memory.get("n") or 0) + 1
        memory.set("n", n)
        memory.set("doc.draft", event.input)
        ctx.send_event(Noted(n=n))

    @action(Noted)
    def publish(event: Noted, ctx: RunnerContext) -> None:
        ctx.get_resource("calls").append("publish")
        ctx.short_term_memory.set("doc", f"final {event.n}")
        ctx.send_event(OutputEvent(output=event.n))


@pytest.mark.no_always_replay("counts the runs of each action, which the replay check repeats")
def test_a_finish_cut_in_half_replays_to_the_same_memory() -> None:
    """Scenario: an input's memory writes were stored but the key record that finishes it
    was not (a crash between the two changelog records); a new worker resumes the input.
    We expect: both actions replay from their records (neither runs again), the counter is
    bumped once, and the nested write replays over the plain value that replaced its parent
    later in the same input, as it did live."""
    calls: list[str] = []
    key_state = InMemoryKeyState()
    action_states = InMemoryActionStateStore(serialize=True)
    first = LocalRunner(Reshape(calls), key_state=key_state, action_state_store=action_states)
    record = InputRecord("k", "hello", "in-1")
    assert first.run([record]) == [("k", 1)]
    finished = first.memory("k")
    assert finished == {"n": 1, "doc": "final 1"} and calls == ["note", "publish"]

    key_state.put("k", KeyRecord(seq=1, current=record))  # the finish never got stored

    async def resume() -> LocalRunner:
        second = LocalRunner(Reshape(calls), key_state=key_state, action_state_store=action_states)
        assert second.operator.resume(["k"]) == 1
        await second.operator.drain()
        return second

    second = asyncio.run(resume())
    assert calls == ["note", "publish"], "a completed action ran again"
    assert second.outputs == [("k", 1)]
    assert second.memory("k") == finished
    assert key_state.get("k") == KeyRecord(seq=1)
