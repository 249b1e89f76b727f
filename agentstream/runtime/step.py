"""One step of an input: run (or replay) an action, record it, move its sent events on.

The :class:`~agentstream.runtime.operator.Operator` is an :class:`ActionStep`; this module
holds the step, the operator module holds the inputs and the key loop.

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
from agentstream.api.events import Event, OutputEvent
from agentstream.api.metrics import MetricGroup
from agentstream.errors import (
    ActionExecutionError,
    ActionTimeoutError,
    EventLimitError,
    EventSendError,
    NonDeterministicActionError,
)
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.eventlog_record import DurableCallLogged
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime import adopt as _adopt
from agentstream.runtime.action_state import (
    ActionState,
    ActionStateStore,
    CallRecord,
    new_action_state,
)
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.counts import RuntimeCounts
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.keyrun import KeyRun
from agentstream.runtime.memory import Snapshot
from agentstream.runtime.ports import ErrorHandler, EventRouter, OutputSink, Waiting
from agentstream.runtime.unheard import UnheardEvents
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
_RECENT: Final = 8  # event types named when an input passes max_events_per_input


def _replayed(run: KeyRun, event: Event) -> bool:
    """Whether ``event`` was re-sent by a replayed action (for the event log)."""
    return run.replayed is not None and event.id in run.replayed


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


class ActionStep:
    """The action step and the sending of events, over the operator's ports and state."""

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
        self.agent = agent
        self.action_states = action_states
        self.metrics = metrics
        self.event_time = event_time
        self.failures: list[ActionExecutionError] = []
        self._counts = counts
        self._put_state: Callable[[Any, int, str, str, ActionState], None] = action_states.put
        self._emit_output = output.emit  # bound once (looked up by name on every call else)
        self._router = router
        self._event_logger = event_logger
        self._on_error = on_error
        self._always_replay = always_replay
        self._executor = executor
        self._barrier = barrier
        self._action_timeout_s = action_timeout_s
        self._max_events = max_events_per_input
        self._note_from = max_events_per_input - _RECENT  # the types of sends past it are noted
        self._incarnation = ""  # set by the operator
        self._groups: dict[str, tuple[MetricGroup, MetricGroup]] = {}
        self._actions: dict[type[Event], tuple[Action, ...]] = {}  # agent.actions_for, cached
        self._unheard_events = UnheardEvents(agent, strict)  # strict: they fail the input

    # -- the context's host (ContextHost) -------------------------------------------

    def executor_for_calls(self) -> Executor | None:
        return self._executor

    def barrier_for_calls(self) -> Callable[[], Awaitable[None]] | None:
        return self._barrier

    def persist_calls(self, ctx: RunnerContextImpl) -> None:
        """An action's durable call finished (or started): record it before going on."""
        self._put_state(
            ctx.slot,
            ctx.seq,
            ctx.action_name,
            ctx.event_id,
            new_action_state(False, calls=tuple(ctx.calls)),
        )

    def replayed_call(self, ctx: RunnerContextImpl) -> None:
        self._counts.child(self.metrics.durable_calls_replayed, ctx.action_name).inc()

    def logged_call(
        self, ctx: RunnerContextImpl, record: CallRecord, position: int, latency_s: float | None
    ) -> None:
        """Log a durable call to the event log (``latency_s`` None: served from the record)."""
        if self._event_logger is None or record.status == "started":
            return
        event = ctx.event
        outcome = "replayed" if latency_s is None else record.status
        logged = DurableCallLogged(
            id=f"{event.id}/{ctx.action_name}/call-{position}",
            parent_id=event.id,
            source_timestamp=event.source_timestamp,
            function=record.fn_id,
            args_digest=record.digest,
            position=position,
            outcome=outcome,
            latency_ms=0.0 if latency_s is None else round(latency_s * 1000, 3),
            error=None
            if record.status != "error"
            else f"{record.error_type}: {record.error_message}",
        )
        self._event_logger.append(
            EventLogRecord(
                time.time(), ctx.key, ctx.seq, logged, ctx.action_name, latency_s is None
            )
        )

    def metric_groups(self, action: str) -> tuple[MetricGroup, MetricGroup]:
        """(agent group, action group) of ``action``'s metrics."""
        groups = self._groups.get(action)
        if groups is None:
            groups = self._groups[action] = (
                self.metrics.agent_group(self.agent.name),
                self.metrics.action_group(self.agent.name, action),
            )
        return groups

    # -- events ------------------------------------------------------------------------

    def _listeners(self, event_type: type[Event]) -> tuple[Action, ...]:
        actions = self._actions.get(event_type)
        if actions is None:
            actions = self._actions[event_type] = self.agent.actions_for(event_type)
        return actions

    def _dispatch(self, run: KeyRun, event: Event, sender: str | None) -> None:
        """Process a non-output event: log and count it, queue the actions it triggers."""
        if self._event_logger is not None:
            self._event_logger.append(
                EventLogRecord(time.time(), run.key, run.seq, event, sender, _replayed(run, event))
            )
        event_type = type(event)
        self._counts.events[event_type] += 1
        actions = self._actions.get(event_type)
        if actions is None:
            actions = self._actions[event_type] = self.agent.actions_for(event_type)
            if not actions:
                self._unheard_events.warn(event_type, sender)
        for action in actions:
            run.tasks.append((action, event))

    def _unheard(self, run: KeyRun, event: Event, sender: str) -> Waiting:
        """An action sent an event no action listens to (not an output): warn once per
        type and count it; a strict runner fails the input instead."""
        event_type = type(event)
        if self._event_logger is not None:
            self._event_logger.append(
                EventLogRecord(time.time(), run.key, run.seq, event, sender, _replayed(run, event))
            )
        self._counts.events[event_type] += 1
        self._counts.child(self.metrics.unhandled_events, event_type.type_name()).inc()
        unheard = self._unheard_events
        if unheard.strict:
            return self._fail(run, unheard.error(run.key, sender, event, run.seq), event)
        unheard.warn(event_type, sender)
        return None

    def _send_on(
        self, run: KeyRun, events: Sequence[Event], packed: Sequence[bytes], sender: str
    ) -> Waiting:
        """Move an action's sent events on: outputs out, others to their actions."""
        for index, event in enumerate(events):
            if run.aborted:
                return None
            waiting = self._send_one(run, event, packed[index], sender)
            if waiting is not None:
                return self._send_rest(run, events, packed, sender, index + 1, waiting)
        return None

    async def _send_rest(
        self,
        run: KeyRun,
        events: Sequence[Event],
        packed: Sequence[bytes],
        sender: str,
        start: int,
        waiting: Awaitable[None],
    ) -> None:
        """:meth:`_send_on` from the first send that waits: the rest go one after another."""
        await waiting
        for index in range(start, len(events)):
            if run.aborted:
                return
            waiting_on = self._send_one(run, events[index], packed[index], sender)
            if waiting_on is not None:
                await waiting_on

    def _send_one(self, run: KeyRun, event: Event, packed: bytes, sender: str) -> Waiting:
        sent = run.sent = run.sent + 1
        if sent > self._note_from and self._past_limit(run, event, sender):
            self.metrics.event_limit_exceeded.inc()
            assert run.recent is not None
            error = EventLimitError(
                run.key, sender, str(event.id), run.seq, self._max_events, run.recent[-_RECENT:]
            )
            return self._fail(run, error, event, abort=True)
        if isinstance(event, OutputEvent):
            if self._event_logger is not None:
                self._event_logger.append(
                    EventLogRecord(
                        time.time(), run.key, run.seq, event, sender, _replayed(run, event)
                    )
                )
            counts = self._counts
            counts.events[type(event)] += 1
            counts.outputs += 1
            record = run.record
            try:
                waiting = self._emit_output(
                    run.key, event, record, self.event_time.watermark(record.partition)
                )
            except Exception as exc:
                return self._send_failed(run, event, sender, exc)
            return None if waiting is None else self._delivery(run, event, sender, waiting)
        if not self._listeners(type(event)):
            return self._unheard(run, event, sender)
        router = self._router
        if router is None:
            self._dispatch(run, event, sender)
            return None
        assert event.id is not None
        if run.in_flight is None:
            run.in_flight = set()
        run.in_flight.add(event.id)
        try:
            routed = router.route(
                run.key, run.tag(self._incarnation), event, packed, sender, run.record
            )
        except Exception as exc:
            return self._send_failed(run, event, sender, exc)
        return self._delivery(run, event, sender, routed)

    async def _delivery(
        self, run: KeyRun, event: Event, sender: str, waiting: Awaitable[None]
    ) -> None:
        """Wait for a send; a failure goes through the error policy (never out of the task)."""
        try:
            await waiting
        except Exception as exc:
            then = self._send_failed(run, event, sender, exc)
            if then is not None:
                await then

    def _send_failed(self, run: KeyRun, event: Event, sender: str, exc: Exception) -> Waiting:
        if run.in_flight is not None and event.id is not None:
            run.in_flight.discard(event.id)  # it never left: do not wait for it
        self._counts.child(self.metrics.send_failures, sender).inc()
        error = EventSendError(run.key, sender, str(event.id), run.seq, exc)
        return self._fail(run, error, event)

    def _past_limit(self, run: KeyRun, event: Event, sender: str) -> bool:
        """Near ``max_events_per_input``: note the event's type; True past the limit (a
        runaway loop of actions, which stops the input)."""
        recent = run.recent
        if recent is None:
            recent = run.recent = []
        recent.append(f"{type(event).type_name()} from {sender!r}")
        return run.sent > self._max_events

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

    def _fail(
        self, run: KeyRun, error: ActionExecutionError, event: Event, abort: bool = False
    ) -> Waiting:
        """A step failed: the error policy, or (without one) keep the error, stop the input."""
        if self._on_error is not None:
            if abort:
                run.abort()
            return self._on_error(error, event, run.record)
        log.error("%s", error, exc_info=error.cause)
        self.failures.append(error)
        run.abort()
        return None
