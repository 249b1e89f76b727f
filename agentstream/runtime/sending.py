"""Moving sent events on, and what the action step asks of its host.

:class:`EventFlow` is the base of :class:`~agentstream.runtime.step.ActionStep` (and so of
the operator): it holds the operator's ports and state and does everything around an
action run but the run itself::

    sent event ── OutputEvent ──► the output sink (may return something to wait for)
             └─── other ─────────► the router (the service's internal topic), or straight
                                  to dispatch in-process ──► the actions it triggers
    a send that fails ──► EventSendError ──► error policy; the input goes on
    more than max_events_per_input sent ──► EventLimitError ──► error policy; input stopped
    an event no action listens to ──► warned once per type (strict: the input fails)

It is also the context's host (``ContextHost``): durable calls are recorded, counted and
logged through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Final

from agentstream.api.agent import Action, Agent
from agentstream.api.events import Event, OutputEvent
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ActionExecutionError, EventLimitError, EventSendError
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.eventlog_record import DurableCallLogged
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.action_state import (
    ActionState,
    ActionStateStore,
    CallRecord,
    new_action_state,
)
from agentstream.runtime.context import RunnerContextImpl
from agentstream.runtime.counts import RuntimeCounts
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.keyrun import KeyRun
from agentstream.runtime.ports import ErrorHandler, EventRouter, OutputSink, Waiting
from agentstream.runtime.unheard import UnheardEvents

__all__ = ["EventFlow"]

log = logging.getLogger("agentstream.runtime.step")

_RECENT: Final = 8  # event types named when an input passes max_events_per_input


def _replayed(run: KeyRun, event: Event) -> bool:
    """Whether ``event`` was re-sent by a replayed action (for the event log)."""
    return run.replayed is not None and event.id in run.replayed


class EventFlow:
    """Sent events moved on, failures through the error policy, the context's host."""

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
        executor: Executor | None,
        barrier: Callable[[], Awaitable[None]] | None,
        max_events_per_input: int,
        strict: bool,
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
        self._executor = executor
        self._barrier = barrier
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
