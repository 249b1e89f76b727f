"""The agent of the rescale tests (tests/chaos/test_rescale.py), run in real worker
processes and configured by environment like tests/chaos/eos_app.py.

Each input is ``{"seq": n}``, the n-th input of its key. The one action adds 1 to the
key's counter in short-term memory and emits ``{"value": n, "count": counter}``: as long
as every key keeps its memory and its order through a migration, ``count == value`` for
every output (a reset, a gap, an input processed twice into memory or out of order all
break it). The key also keeps a history of 1 KB notes, one per input (long enough to be
stored in segments, which must move with the key), and the output carries the seq of the
history's last note and its length: both are ``value`` too.
"""

from __future__ import annotations

import os

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action

NOTE = "n" * 1000


class Counter(Agent):
    @action(InputEvent)
    def count(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        count = (memory.get("count") or 0) + 1
        memory.set("count", count)
        seq = event.input["seq"]
        history = memory.get("history") or []
        history.append(f"{seq}:{NOTE}")
        memory.set("history", history)
        last = int(history[-1].split(":")[0])
        ctx.send_event(
            OutputEvent(output={"value": seq, "count": count, "history": [last, len(history)]})
        )


app = AgentApp(
    os.environ.get("E2E_APP", "rescale"),
    agent=Counter(),
    input_topic=os.environ.get("E2E_IN", "rescale-in"),
    output_topic=os.environ.get("E2E_OUT", "rescale-out"),
    fetch_wait_ms=20,
    commit_interval_s=0.1,
)
