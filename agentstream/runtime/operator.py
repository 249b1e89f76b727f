"""The :class:`Operator`: the broker-agnostic keyed event processor.

The Kafka service and the in-process runner drive the same operator through the same key
loop. It talks to state only through :class:`KeyStateBackend` and :class:`ActionStateStore`,
and to the outside only through the ports of :mod:`agentstream.runtime.ports`.

Design note (mirrors Flink Agents' ActionExecutionOperator)::

    on_input(record) ── redelivered (partition, offset)? ── yes ──► dropped
                          │
                          ▼ key busy? ── yes ──► KeyRecord.pending (one write)
                          │ no
           seq += 1, current = record (one write) ──► the key loop
    key loop: a free permit? ── no ──► in line (a permit given back: the next key runs)
                          │ yes
       input: InputEvent ─► dispatch ─► tasks (action, event), one step at a time
       (agentstream.runtime.step); the input is done when no task is queued and no
       routed event is in flight ─► the memory it changed and the next pending input
       (one transition: ``put(slot, record, memory)``).

The operator is a :class:`~agentstream.runtime.keyloop.KeyLoop` (the key loop: inline in
on_input until a step has to wait, then a task; the concurrency cap), which is an
:class:`~agentstream.runtime.step.ActionStep` (one action run), which is an
:class:`~agentstream.runtime.sending.EventFlow` (sent events moved on, the error policy).
This module holds what comes in: inputs, routed events, resumption and cancellation.

A key's identity in state, its *slot*, is the record key in-process; the service scopes it
to the input partition (``(partition, key)``), so a key whose records arrive on several
partitions is processed per partition, each in arrival order, and redelivery is
recognised per (partition, offset).

Recovery re-runs a key's current input from its InputEvent: completed actions replay
from their records (same event ids), unfinished ones run again, serving their recorded
durable calls. Routed events carry a tag (seq and attempt); events of an earlier attempt
are dropped, so a restart never processes an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import Executor
from typing import Any, Final

from agentstream.api.agent import Agent
from agentstream.api.events import Event
from agentstream.observability.eventlog import EventLogger
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.action_state import ActionStateStore
from agentstream.runtime.keyloop import KeyLoop
from agentstream.runtime.keyrun import KeyRun
from agentstream.runtime.ports import (
    ErrorHandler,
    EventRouter,
    FatalHandler,
    OutputSink,
)
from agentstream.runtime.records import InputRecord, KeyRecord, KeyStateBackend

__all__ = ["DEFAULT_MAX_EVENTS_PER_INPUT", "ErrorHandler", "EventRouter", "Operator", "OutputSink"]

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS_PER_INPUT: Final = 1000


class Operator(KeyLoop):
    """Processes keyed inputs with Flink Agents' event-processing semantics.

    Args:
        agent: the agent whose actions run.
        key_state: per-key bookkeeping (seq, current and pending inputs) and memory.
        action_states: where action runs are recorded for replay-skip.
        output: receives OutputEvents.
        router: carries other sent events through a topic; None processes them at once.
        event_logger: receives one record per processed event.
        metrics: built-in and user metrics (a fresh registry if None).
        on_error: called with each failed step (the service dead-letters); None aborts
            the input and keeps the error in :attr:`failures`.
        on_fatal: called when a key's runner fails outside any step (the error policy or
            the state store raised); None keeps it in :attr:`fatal`.
        always_replay: after each action, rebuild from its record and re-run it to check
            that it is deterministic.
        max_concurrency: how many keys may process an input at once (None: no cap).
        executor: thread pool for blocking ``durable_execute_async`` functions.
        barrier: awaited after an action or durable call is recorded, before anything
            depends on it: the service makes the record durable there, so a completed
            action or call is never run again after a crash.
        prune_finished: drop an input's action state as soon as the input finishes,
            instead of listing it for :meth:`prune` (nothing is left to replay).
        per_partition: scope a key's state to its input partition (the service).
        action_timeout_s: default timeout of an action once it first waits (None: none).
        max_events_per_input: how many events an input's actions may send in all; past it
            the input fails with :class:`~agentstream.errors.EventLimitError`.
        strict: an event that no action listens to (and is not an output) fails the input
            with :class:`~agentstream.errors.UnhandledEventError`; by default it is dropped
            with a warning (once per type) and counted.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        key_state: KeyStateBackend,
        action_states: ActionStateStore,
        output: OutputSink,
        router: EventRouter | None = None,
        event_logger: EventLogger | None = None,
        metrics: RuntimeMetrics | None = None,
        on_error: ErrorHandler | None = None,
        on_fatal: FatalHandler | None = None,
        always_replay: bool = False,
        max_concurrency: int | None = None,
        executor: Executor | None = None,
        barrier: Callable[[], Awaitable[None]] | None = None,
        prune_finished: bool = False,
        per_partition: bool = False,
        action_timeout_s: float | None = None,
        max_events_per_input: int = DEFAULT_MAX_EVENTS_PER_INPUT,
        strict: bool = False,
    ):
        super().__init__(
            agent,
            key_state,
            action_states,
            output,
            router,
            event_logger,
            metrics or RuntimeMetrics(),
            on_error,
            on_fatal,
            always_replay,
            max_concurrency,
            executor,
            barrier,
            prune_finished,
            action_timeout_s,
            max_events_per_input,
            strict,
        )
        self._per_partition = per_partition
        self._incarnation = uuid.uuid4().hex[:8]
        self._counts.register()

    # -- inputs ------------------------------------------------------------------

    def slot_of(self, record: InputRecord) -> Hashable:
        """The identity in state of ``record``'s key."""
        return (record.partition, record.key) if self._per_partition else record.key

    def on_input(self, record: InputRecord) -> bool:
        """Accept an input: start it, or queue it behind the key's current input.

        Returns False for a redelivered record (its offset in its partition was already
        accepted for the key).
        """
        slot = (record.partition, record.key) if self._per_partition else record.key
        rec = self._get_key(slot)
        if rec is None:
            rec = KeyRecord()
        if record.offset is not None:
            if record.offset <= rec.last_offset:
                return False
            rec.last_offset = record.offset
        if record.timestamp is not None:
            self.event_time.started(record.partition, record.timestamp)
        self._in_flight(record, 1)
        if rec.current is not None or slot in self._runners:
            rec.pending.append(record)
            self._put_key(slot, rec)
            self._counts.pending += 1
            return True
        rec.seq += 1
        rec.current = record
        self._put_key(slot, rec)
        self._start(slot, rec)
        return True

    def resume(self, slots: Iterable[Hashable]) -> int:
        """Restart the in-flight inputs of ``slots`` after a restart or rebalance.

        Returns how many keys were resumed.
        """
        resumed = 0
        for slot in slots:
            rec = self.key_state.get(slot)
            if rec is None or rec.current is None or slot in self._runners:
                continue
            for record in (rec.current, *rec.pending):
                self.event_time.started(record.partition, record.timestamp)
                self._in_flight(record, 1)
            self._counts.pending += len(rec.pending)
            self._start(slot, rec)
            resumed += 1
        return resumed

    async def cancel(self, predicate: Callable[[InputRecord], bool]) -> None:
        """Stop the keys whose current input matches (its partition was revoked)."""

        def in_line(slot: Hashable) -> bool:
            rec = self.key_state.get(slot)
            return rec is not None and rec.current is not None and predicate(rec.current)

        # First the keys in line: a permit given back must not go to a doomed key.
        stopped = self._limit.withdraw(in_line)
        doomed = [
            (slot, task)
            for slot, task in self._runners.items()
            if (run := self._runs.get(slot)) is not None and predicate(run.record)
        ]
        for _, task in doomed:
            task.cancel()
        for slot, task in doomed:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stopped.append(slot)
        for slot in stopped:
            rec = self.key_state.get(slot)
            if rec is not None:
                self._counts.pending -= len(rec.pending)
                for record in rec.pending if rec.current is None else (rec.current, *rec.pending):
                    self._in_flight(record, -1)

    def busy_keys(self) -> int:
        return len(self._runners)

    def run_of(self, slot: Hashable) -> KeyRun | None:
        """The key's input in progress, if any (for inspection)."""
        return self._runs.get(slot)

    async def drain(self) -> None:
        """Wait until every key is idle."""
        while self._runners:
            await asyncio.gather(*list(self._runners.values()), return_exceptions=True)

    @property
    def finished_count(self) -> int:
        """How many inputs finished since the last :meth:`prune`."""
        return len(self._finished)

    def finished_inputs(self) -> list[tuple[Hashable, int]]:
        """(slot, seq) of inputs finished since the last :meth:`prune`."""
        return list(self._finished)

    def prune(self, upto: int | None = None) -> None:
        """Drop the action state of finished inputs (the first ``upto`` of them).

        The service calls this once the inputs' state and offsets are committed; never
        touches an input still in flight (those are not in the finished list).
        """
        count = len(self._finished) if upto is None else upto
        prune = self.action_states.prune
        for slot, seq in self._finished[:count]:
            prune(slot, seq)
        del self._finished[:count]

    def forget_finished(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop finished inputs of the slots matching ``predicate`` from the list
        :meth:`prune` works on, without pruning them (their partition's state went back to
        its last commit, where they are not finished: their action state must stay)."""
        self._finished = [(slot, seq) for slot, seq in self._finished if not predicate(slot)]

    def flush_metrics(self) -> None:
        """Move the hot-path counts into the Prometheus metrics (runs on every collection)."""
        self._counts.flush()

    # -- routed events -------------------------------------------------------------

    async def on_routed_event(self, slot: Any, tag: str, event: Event, sender: str) -> bool:
        """An event sent through the router came back; False if stale or a duplicate."""
        run = self._runs.get(slot)
        if (
            run is None
            or run.tag(self._incarnation) != tag
            or not run.in_flight
            or event.id not in run.in_flight
        ):
            return False
        run.in_flight.discard(event.id)
        self._dispatch(run, event, sender)  # outputs are never routed
        run.wake()
        return True
