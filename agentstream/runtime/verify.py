"""The "always replay" check: after an action ran, run it again from its record.

restate's test harness does this to expose non-determinism: the caches are dropped, the
recorded memory updates re-applied and the action re-run with its recorded durable calls
served; it must send the same events, make the same memory updates and the same calls.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from agentstream.api.agent import Action
from agentstream.api.events import Event
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.keyrun import KeyRun, Verification
from agentstream.runtime.memory import Snapshot
from agentstream.serde import encode_event, unpack_event

if TYPE_CHECKING:
    from agentstream.runtime.step import ActionStep

__all__ = ["replay_check"]


async def replay_check(
    step: ActionStep,
    run: KeyRun,
    action: Action,
    event: Event,
    before: tuple[Snapshot, Snapshot | None],
) -> tuple[Event, ...]:
    """The "always replay" step: drop caches, rebuild from the record, re-run, compare."""
    assert event.id is not None
    recorded = step.action_states.get(run.slot, run.seq, action.name, event.id)
    if recorded is None or not recorded.completed:
        raise ReplayMismatch("the action state store lost the record just written")
    events = tuple(unpack_event(e) for e in recorded.sent_events)
    run.restore(before)
    twin = Verification(run.key, run.short.copy(), run.sensory.copy())
    run.apply(recorded.memory_updates)

    ctx = RunnerContextImpl(step, action, event, run.slot, run.seq, twin, recorded, verify=True)
    try:
        result = action.fn(event, ctx)
        if inspect.isawaitable(result):
            await result
    except ReplayMismatch:
        raise
    except Exception as exc:
        raise ReplayMismatch(
            f"raised {type(exc).__name__}: {exc} on replay but completed the first time"
        ) from exc
    finally:
        ctx.close()
    # Compared as recorded: the record holds the decoded events (a model output comes back
    # as a mapping), not the objects the action sent.
    again = [encode_event(unpack_event(e)) for e in ctx.packed_events]
    if again != [encode_event(e) for e in events]:
        raise ReplayMismatch(
            f"sent {again} on replay, {[encode_event(e) for e in events]} the first time"
        )
    if [list(u) for u in ctx.updates] != [list(u) for u in recorded.memory_updates]:
        raise ReplayMismatch("made different memory updates on replay")
    if len(ctx.calls) != len(recorded.calls):
        raise ReplayMismatch(
            f"made {len(ctx.calls)} durable calls on replay, {len(recorded.calls)} before"
        )
    # What the replay sent goes on (equal to the record, checked above): the objects an
    # action builds, such as a model output, stay what they are, as after a real recovery.
    return tuple(ctx.events)
