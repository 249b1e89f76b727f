"""The agent of the rescale tests (tests/chaos/test_rescale.py), run in real worker
processes and configured by environment like tests/chaos/eos_app.py.

Each input is ``{"seq": n}``, the n-th input of its key. The one action adds 1 to the
key's counter in short-term memory and emits ``{"value": n, "count": counter}``: as long
as every key keeps its memory and its order through a migration, ``count == value`` for
every output (a reset, a gap, an input processed twice into memory or out of order all
break it).
"""

from __future__ import annotations

import os

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action


class Counter(Agent):
    @action(InputEvent)
    def count(event: InputEvent, ctx: RunnerContext) -> None:
        count = (ctx.short_term_memory.get("count") or 0) + 1
        ctx.short_term_memory.set("count", count)
        ctx.send_event(OutputEvent(output={"value": event.input["seq"], "count": count}))


app = AgentApp(
    os.environ.get("E2E_APP", "rescale"),
    agent=Counter(),
    input_topic=os.environ.get("E2E_IN", "rescale-in"),
    output_topic=os.environ.get("E2E_OUT", "rescale-out"),
    fetch_wait_ms=20,
    commit_interval_s=0.1,
)
