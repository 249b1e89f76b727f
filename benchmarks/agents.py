"""The workload agents, run by ``agentstream worker benchmarks.agents:app``.

Configured by environment (the benchmark sets it per run):

- ``BENCH_WORKLOAD``: ``one`` | ``three`` | ``llm`` | ``count`` | ``memory`` | ``chat`` |
  ``steps`` (default ``one``);
- ``BENCH_MEMORY_BYTES``: the untouched memory of ``memory`` per key (default 100,000);
- ``BENCH_APP``, ``BENCH_IN``, ``BENCH_OUT``: app id and topics;
- ``BENCH_TAG_PID``: if set, outputs carry the worker's pid (restart measurement);
- ``BENCH_CALL_S``: how long ``llm``'s simulated remote call takes (default 1.0; 0: it
  returns at once, for the CPU-bound ceiling).

Workloads (the input is a ~200-byte JSON object):

- ``one``: InputEvent -> one action -> OutputEvent(input);
- ``three``: InputEvent -> A -> StepB -> B -> StepC -> C -> OutputEvent, each action
  incrementing its own short-term-memory counter of the key;
- ``llm``: one action awaiting a simulated 1 s remote call through
  ``ctx.durable_execute_async``;
- ``count``: one action incrementing a short-term-memory counter (peak RSS per key);
- ``memory``: ``count`` over a key that also holds ``BENCH_MEMORY_BYTES`` of memory no
  input touches (written by the key's first input: 1 KB strings in a list);
- ``chat``: one action appending a 1 KB message to a history list in short-term memory
  (what a conversational agent keeps), outputting the history's length;
- ``chat-dicts``: ``chat`` with messages as a model API has them,
  ``{"role": "user", "content": <1 KB>}``;
- ``steps``: one action run 50 times in a chain (each run sends the event that triggers
  the next and notes its step in memory), then the output.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action

_PID = os.getpid() if os.environ.get("BENCH_TAG_PID") else None


def _output(value: Any) -> OutputEvent:
    if _PID is not None:
        value = {**value, "pid": _PID}
    return OutputEvent(output=value)


def _bump(ctx: RunnerContext, name: str) -> None:
    memory = ctx.short_term_memory
    memory.set(name, (memory.get(name) or 0) + 1)


class One(Agent):
    @action(InputEvent)
    async def forward(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(_output(event.input))


class StepB(Event):
    value: Any


class StepC(Event):
    value: Any


class Three(Agent):
    @action(InputEvent)
    async def a(event: InputEvent, ctx: RunnerContext) -> None:
        _bump(ctx, "a")
        ctx.send_event(StepB(value=event.input))

    @action(StepB)
    async def b(event: StepB, ctx: RunnerContext) -> None:
        _bump(ctx, "b")
        ctx.send_event(StepC(value=event.value))

    @action(StepC)
    async def c(event: StepC, ctx: RunnerContext) -> None:
        _bump(ctx, "c")
        ctx.send_event(_output(event.value))


CALL_S = float(os.environ.get("BENCH_CALL_S") or 1.0)


async def remote_call(value: Any) -> Any:
    """A simulated LLM or tool call: ``CALL_S`` (one second) of remote latency, no local
    CPU."""
    await asyncio.sleep(CALL_S)
    return value


class Llm(Agent):
    @action(InputEvent)
    async def ask(event: InputEvent, ctx: RunnerContext) -> None:
        answer = await ctx.durable_execute_async(remote_call, event.input)
        ctx.send_event(_output(answer))


class Count(Agent):
    @action(InputEvent)
    async def count(event: InputEvent, ctx: RunnerContext) -> None:
        _bump(ctx, "n")
        ctx.send_event(_output(event.input))


MEMORY_BYTES = int(os.environ.get("BENCH_MEMORY_BYTES") or 100_000)
MESSAGE = "m" * 1000


class Memory(Agent):
    @action(InputEvent)
    async def count(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        n = memory.get("n")
        if n is None and MEMORY_BYTES:
            memory.set("docs", [MESSAGE] * (MEMORY_BYTES // len(MESSAGE)))
        memory.set("n", (n or 0) + 1)
        ctx.send_event(_output(event.input))


class Chat(Agent):
    @action(InputEvent)
    async def reply(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        history = memory.get("history") or []
        history.append(MESSAGE)
        memory.set("history", history)
        ctx.send_event(_output({**event.input, "history": len(history)}))


class ChatDicts(Agent):
    @action(InputEvent)
    async def reply(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        history = memory.get("history") or []
        history.append({"role": "user", "content": MESSAGE})
        memory.set("history", history)
        ctx.send_event(_output({**event.input, "history": len(history)}))


STEPS = 50


class Step(Event):
    n: int
    value: Any


class Steps(Agent):
    @action(InputEvent)
    async def begin(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Step(n=1, value=event.input))

    @action(Step)
    async def step(event: Step, ctx: RunnerContext) -> None:
        ctx.short_term_memory.set("step", event.n)
        if event.n < STEPS:
            ctx.send_event(Step(n=event.n + 1, value=event.value))
        else:
            ctx.send_event(_output(event.value))


WORKLOADS: dict[str, type[Agent]] = {
    "one": One,
    "three": Three,
    "llm": Llm,
    "count": Count,
    "memory": Memory,
    "chat": Chat,
    "chat-dicts": ChatDicts,
    "steps": Steps,
}

app = AgentApp(
    os.environ.get("BENCH_APP", "bench"),
    agent=WORKLOADS[os.environ.get("BENCH_WORKLOAD", "one")](),
    input_topic=os.environ.get("BENCH_IN", "bench-in"),
    output_topic=os.environ.get("BENCH_OUT", "bench-out"),
    partitions=4,
)
