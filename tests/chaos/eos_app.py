"""The agent of the exactly-once chaos tests, run in real worker processes (configured by
environment like tests/e2e_app.py).

``E2E_AGENT`` picks the agent. ``counter`` (the default): every input makes one durable
call, which returns a fresh nonce and appends ``call KEY VALUE NONCE START END`` (wall
times) to ``$E2E_DIR/effects``; the output carries the nonce and the key's count of inputs
so far (short-term memory), so a test can tell a duplicate output, a lost one, a count
applied twice and a completed call run again. ``two-outputs``: an output, then a hop to
an action held at ``$E2E_DIR/gate`` that sends a second output.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action

DIR = Path(os.environ.get("E2E_DIR", "."))


async def remote_call(key: str, value: str) -> str:
    started = time.time()
    nonce = uuid.uuid4().hex[:12]
    await asyncio.sleep(0.002)
    with open(DIR / "effects", "a") as f:
        f.write(f"call {key} {value} {nonce} {started:.3f} {time.time():.3f}\n")
    return nonce


class Step(Event):
    value: str
    nonce: str


class Counter(Agent):
    @action(InputEvent)
    async def first(event: InputEvent, ctx: RunnerContext) -> None:
        nonce = await ctx.durable_execute_async(remote_call, ctx.key, event.input)
        count = (ctx.short_term_memory.get("count") or 0) + 1
        ctx.short_term_memory.set("count", count)
        ctx.send_event(Step(value=event.input, nonce=nonce))  # a hop through Kafka

    @action(Step)
    def second(event: Step, ctx: RunnerContext) -> None:
        count = ctx.short_term_memory.get("count")
        ctx.send_event(
            OutputEvent(output={"value": event.value, "nonce": event.nonce, "count": count})
        )


class TwoOutputs(Agent):
    """An output, then a hop to an action held at ``$E2E_DIR/gate`` before the second."""

    @action(InputEvent)
    def first(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output={"value": event.input, "part": 1}))
        ctx.send_event(Step(value=event.input, nonce=""))

    @action(Step)
    async def second(event: Step, ctx: RunnerContext) -> None:
        with open(DIR / "effects", "a") as f:
            f.write(f"wait {ctx.key} {event.value}\n")
        while not (DIR / "gate").exists():
            await asyncio.sleep(0.02)
        ctx.send_event(OutputEvent(output={"value": event.value, "part": 2}))


AGENTS = {"counter": Counter, "two-outputs": TwoOutputs}

app = AgentApp(
    os.environ.get("E2E_APP", "eos"),
    agent=AGENTS[os.environ.get("E2E_AGENT", "counter")](),
    input_topic=os.environ.get("E2E_IN", "eos-in"),
    output_topic=os.environ.get("E2E_OUT", "eos-out"),
    partitions=4,
    fetch_wait_ms=20,
    commit_interval_s=0.1,
)
