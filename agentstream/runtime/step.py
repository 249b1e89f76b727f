"""One step of an input: run (or replay) an action, record it, move its sent events on.

The :class:`~agentstream.runtime.operator.Operator` is an :class:`ActionStep`, which is an
:class:`~agentstream.runtime.sending.EventFlow`: this module holds the step, sending.py
moves sent events on, the operator module holds the inputs and the key loop.

Each step is a plain function that either finishes (returns None) or returns what to await
before the input can go on (see :mod:`agentstream.runtime.operator`)::

    (action, event) ── recorded as completed? ── yes ──► replay: re-apply its memory
          │ no                                           updates, send its events on
          ▼
    run it ── raised / timed out ──► roll memory back ──► error policy
          │ returned
          ▼
    record it ──► barrier (durable) ──► send its events on: OutputEvent ──► sink,
                                        other ──► router or straight to dispatch
    a send that fails ──► EventSendError ──► error policy; the input goes on
    more than max_events_per_input sent ──► EventLimitError ──► error policy; input stopped
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import types
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Final

from agentstream.api.agent import Action, Agent
from agentstream.api.events import Event
from agentstream.errors import (
    ActionExecutionError,
    ActionTimeoutError,
    NonDeterministicActionError,
)
from agentstream.observability.eventlog import EventLogger
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime import adopt as _adopt
from agentstream.runtime.action_state import (
    ActionStateStore,
    new_action_state,
)
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.counts import RuntimeCounts
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.keyrun import KeyRun
from agentstream.runtime.memory import Snapshot
from agentstream.runtime.ports import ErrorHandler, EventRouter, OutputSink, Waiting
from agentstream.runtime.sending import EventFlow
from agentstream.runtime.verify import replay_check
from agentstream.serde import unpack_event

__all__ = ["ActionStep"]

log = logging.getLogger(__name__)

# Final: the compiled build keeps these in C variables (a plain global is a dict lookup).
_clock: Final = time.perf_counter
_CoroutineType: Final = types.CoroutineType
DONE: Final = _adopt.DONE
adopt: Final = _adopt.adopt
first_result: Final = _adopt.first_result
Returned: Final = _adopt.Returned


def _returned(action: Action, value: Any) -> TypeError:
    """The error of an action that returned ``value``: actions send, they return None."""
    if isinstance(value, Event):
        how = "send it with ctx.send_event(...) instead of returning it"
    else:
        how = "send results on as events with ctx.send_event(...), or keep them in memory"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return TypeError(
        f"action {action.name!r} returned {type(value).__name__} {shown}: an action returns "
        f"None; {how}"
    )


class _TimedOut(Exception):
    """An action's timeout passed (becomes an ActionTimeoutError)."""

    def __init__(self, timeout_s: float):
        super().__init__(timeout_s)
        self.timeout_s = timeout_s


class ActionStep(EventFlow):
    """The action step: run (or replay) an action, record it, send its events on."""

    def __init__(
        self,
        agent: Agent,
        action_states: ActionStateStore,
        output: OutputSink,
        router: EventRouter | None,
        event_logger: EventLogger | None,
        metrics: RuntimeMetrics,
        counts: RuntimeCounts,
        event_time: EventTimeTracker,
        on_error: ErrorHandler | None,
        always_replay: bool,
        executor: Executor | None,
        barrier: Callable[[], Awaitable[None]] | None,
        action_timeout_s: float | None,
        max_events_per_input: int,
        strict: bool = False,
    ):
        super().__init__(
            agent,
            action_states,
            output,
            router,
            event_logger,
            metrics,
            counts,
            event_time,
            on_error,
            executor,
            barrier,
            max_events_per_input,
            strict,
        )
        self._always_replay = always_replay
        self._action_timeout_s = action_timeout_s

    # -- one action step -----------------------------------------------------------------

    def _run_task(self, run: KeyRun, action: Action, event: Event) -> Waiting:
        name, event_id, slot, seq = action.name, event.id, run.slot, run.seq
        assert event_id is not None
        # A fresh input's runs cannot be recorded yet: each (action, event) runs once per
        # attempt, so only what an earlier attempt left behind needs looking up.
        state = None if run.fresh else self.action_states.get(slot, seq, name, event_id)
        if state is not None and state.completed:  # replay: the action does not run
            packed: Sequence[bytes] = state.sent_events
            events: Sequence[Event] = [unpack_event(e) for e in packed]
            if self._event_logger is not None and events:  # logged as replayed
                replayed = run.replayed
                if replayed is None:
                    replayed = run.replayed = set()
                replayed.update(str(e.id) for e in events)
            run.apply(state.memory_updates)
            self._counts.child(self.metrics.actions_replayed, name).inc()
            return self._send_on(run, events, packed, name)
        # Memory as of the action's start (copy on write: free until the first write), so
        # that a failed action's writes are rolled back.
        snapshot = run.snapshot()
        ctx = RunnerContextImpl(self, action, event, slot, seq, run, state)
        started = _clock()
        error: Exception | None = None
        try:
            result = action.fn(event, ctx)
            if type(result) is _CoroutineType:
                waiting_on = first_result(result)
                if waiting_on is DONE:
                    pass
                elif type(waiting_on) is Returned:
                    error = _returned(action, waiting_on.value)
                else:
                    rest = adopt(result, waiting_on)
                    return self._action_waits(run, ctx, snapshot, started, rest)
            elif result is not None:
                if inspect.isawaitable(result):
                    return self._action_waits(run, ctx, snapshot, started, result)
                error = _returned(action, result)
        except Exception as exc:
            error = exc
        except BaseException:
            ctx.close()
            raise
        return self._action_ended(run, action, event, ctx, snapshot, started, error)

    async def _action_waits(
        self,
        run: KeyRun,
        ctx: RunnerContextImpl,
        snapshot: tuple[Snapshot, Snapshot | None],
        started: float,
        rest: Awaitable[Any],
    ) -> None:
        """An action that waits: await the ``rest`` of it (within its timeout), then end the
        step as above (the context knows its action and event)."""
        action = ctx.action
        error: Exception | None = None
        timeout = action.timeout if action.timeout is not None else self._action_timeout_s
        try:
            if timeout is None:
                value = await rest
            else:
                finished, value = await self._within(rest, timeout - (_clock() - started))
                if not finished:
                    error = _TimedOut(timeout)
                    self._counts.child(self.metrics.action_timeouts, action.name).inc()
            if value is not None and error is None:
                error = _returned(action, value)
        except Exception as exc:
            error = exc
        except BaseException:
            ctx.close()
            raise
        then = self._action_ended(run, action, ctx.event, ctx, snapshot, started, error)
        if then is not None:
            await then

    @staticmethod
    async def _within(rest: Awaitable[Any], timeout_s: float) -> tuple[bool, Any]:
        """Await ``rest`` for at most ``timeout_s``: (True, what it returned), or (False,
        None) and ``rest`` cancelled if it did not finish. Its own exceptions propagate.

        ``rest`` runs in a task of its own: this coroutine may have been started inline,
        in a task that is not the key's (``asyncio.timeout`` would cancel that one).
        """
        task = asyncio.ensure_future(rest)
        try:
            await asyncio.wait((task,), timeout=max(timeout_s, 0.0))
        except BaseException:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))  # let it unwind (its finally blocks run)
            if task.cancelled():
                return False, None
        return True, task.result()

    def _action_ended(
        self,
        run: KeyRun,
        action: Action,
        event: Event,
        ctx: RunnerContextImpl,
        snapshot: tuple[Snapshot, Snapshot | None],
        started: float,
        error: Exception | None,
    ) -> Waiting:
        """End the action run of ``ctx`` (``action`` on ``event``, passed along: reading them
        back from the context costs on every run): record it and move its sent events on, or,
        if it raised ``error``, roll its memory writes back (to ``snapshot``) and fail."""
        name = action.name
        if error is None and ctx.async_calls:
            error = ctx.unawaited_error()
        ctx.close()
        self._counts.duration(name).observe(_clock() - started)
        assert event.id is not None
        if error is not None:
            run.restore(snapshot)
            self._counts.child(self.metrics.action_failures, name).inc()
            failure: ActionExecutionError
            if type(error) is _TimedOut:
                failure = ActionTimeoutError(run.key, name, event.id, run.seq, error.timeout_s)
            else:
                failure = ActionExecutionError(run.key, name, event.id, run.seq, error)
            return self._fail(run, failure, event)
        packed = ctx.packed_events
        self._put_state(
            run.slot,
            run.seq,
            name,
            event.id,
            new_action_state(True, tuple(ctx.updates), tuple(packed), tuple(ctx.calls)),
        )
        self._counts.actions[name] += 1
        if self._barrier is not None or self._always_replay:
            return self._after_record(run, ctx, snapshot)
        return self._send_on(run, ctx.events, packed, name)

    async def _after_record(
        self, run: KeyRun, ctx: RunnerContextImpl, snapshot: tuple[Snapshot, Snapshot | None]
    ) -> None:
        """The barrier and the "always replay" check, between recording the run of ``ctx``
        and sending its events on."""
        action, event = ctx.action, ctx.event
        events: Sequence[Event] = ctx.events
        if self._barrier is not None:
            # Durable before its events move on: a completed action never runs again.
            await self._barrier()
        if self._always_replay:
            try:
                events = await replay_check(self, run, action, event, snapshot)
            except ReplayMismatch as exc:
                assert event.id is not None
                error = NonDeterministicActionError(
                    run.key, action.name, event.id, run.seq, str(exc)
                )
                then = self._fail(run, error, event)
                if then is not None:
                    await then
                return
        then = self._send_on(run, events, ctx.packed_events, action.name)
        if then is not None:
            await then
