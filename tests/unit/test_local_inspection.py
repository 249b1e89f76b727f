"""LocalRunner.memory, .pending and .inspect, for tests and notebooks (issue 16)."""

from __future__ import annotations

import asyncio

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.testing import LocalRunner


class Gated(Agent):
    @action(InputEvent)
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.short_term_memory.set("last", event.input)
        if event.input == "wait":
            await ctx.get_resource("gate").wait()
        ctx.send_event(OutputEvent(output=event.input))


async def test_memory_pending_and_inspect_mid_run() -> None:
    """Scenario: a key's first input waits in its action; two more arrive. We expect:
    pending(key) lists the two waiting values in order, memory(key) shows the write made
    so far, inspect(key) the current input and queued work; once the gate opens, nothing
    is pending and memory holds the last input. Unknown keys give empty answers."""
    gate = asyncio.Event()
    runner = LocalRunner(Gated().add_resource("gate", gate))
    running = asyncio.ensure_future(runner.run_async([("k", "wait"), ("k", "b"), ("k", "c")]))
    async with asyncio.timeout(5):
        while runner.pending("k") != ["b", "c"]:
            await asyncio.sleep(0.01)
    assert runner.memory("k") == {"last": "wait"}
    view = runner.inspect("k")
    assert view is not None and view["busy"] is True and view["seq"] == 1
    assert view["current"]["value"] == "wait"
    assert [p["value"] for p in view["pending"]] == ["b", "c"]
    gate.set()
    async with asyncio.timeout(5):
        outputs = await running
    assert outputs == [("k", "wait"), ("k", "b"), ("k", "c")]
    assert runner.pending("k") == [] and runner.memory("k") == {"last": "c"}
    assert runner.memory("nobody") == {} and runner.pending("nobody") == []
    assert runner.inspect("nobody") is None
