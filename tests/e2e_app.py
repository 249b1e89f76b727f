"""Agents the end-to-end tests run in real worker processes (configured by environment).

Side effects are appended as lines to ``$E2E_DIR/effects`` so that a test can count how
often each action and durable call really ran; ``$E2E_DIR/gate`` holds the ``second``
action mid-flight until the test creates it. Each input appends a 3 KB note to the key's
history, and the output lists the inputs the history holds.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action

DIR = Path(os.environ.get("E2E_DIR", "."))
NOTE = "n" * 3000


def effect(line: str) -> None:
    with open(DIR / "effects", "a") as f:
        f.write(line + "\n")


async def remote_call(key: str, value: str) -> str:
    effect(f"call {key} {value}")
    await asyncio.sleep(0.01)
    return f"{value}!"


class Step(Event):
    value: str
    answer: str


class Crashy(Agent):
    @action(InputEvent)
    async def first(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "poison":
            raise ValueError("poisoned input")
        answer = await ctx.durable_execute_async(remote_call, ctx.key, event.input)
        memory = ctx.short_term_memory
        count = (memory.get("count") or 0) + 1
        memory.set("count", count)
        # A history that outgrows one plain value (3 KB per input): appended in segments.
        history = memory.get("history") or []
        history.append(f"{event.input}:{NOTE}")
        memory.set("history", history)
        effect(f"first {ctx.key} {event.input}")
        ctx.send_event(Step(value=event.input, answer=answer))

    @action(Step)
    async def second(event: Step, ctx: RunnerContext) -> None:
        effect(f"wait {ctx.key} {event.value}")
        while not (DIR / "gate").exists():
            await asyncio.sleep(0.02)
        effect(f"second {ctx.key} {event.value}")
        memory = ctx.short_term_memory
        count = memory.get("count")
        seen = [entry[: entry.index(":")] for entry in memory.get("history")]
        ctx.send_event(
            OutputEvent(
                output={"value": event.value, "answer": event.answer, "count": count, "seen": seen}
            )
        )


app = AgentApp(
    os.environ.get("E2E_APP", "e2e"),
    agent=Crashy(),
    input_topic=os.environ.get("E2E_IN", "e2e-in"),
    output_topic=os.environ.get("E2E_OUT", "e2e-out"),
    partitions=4,
    fetch_wait_ms=20,
    commit_interval_s=0.2,
)
