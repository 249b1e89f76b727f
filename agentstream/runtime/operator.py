"""The :class:`Operator`: the broker-agnostic keyed event processor, and its key loop.

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

The key loop runs inline in on_input until a step has to wait (an action awaits, the sink
or router sends, the barrier flushes); the key then gets a task that goes on from that
point, the same loop. Sync actions over in-memory state never touch the event loop. A
concurrency cap is a count of free permits (one per input in progress) and a FIFO of keys
waiting for one. Nothing a key's task raises is left unretrieved: failures of steps go
through the error policy; anything else is fatal for the key and reported to the host.

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
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from concurrent.futures import Executor
from typing import Any, Final

from agentstream.api.agent import Agent
from agentstream.api.events import Event, InputEvent
from agentstream.observability.eventlog import EventLogger
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime import adopt as _adopt
from agentstream.runtime.action_state import ActionStateStore
from agentstream.runtime.counts import RuntimeCounts
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.keyrun import KeyRun
from agentstream.runtime.limit import ConcurrencyLimit
from agentstream.runtime.memory import MemoryStore
from agentstream.runtime.ports import (
    ErrorHandler,
    EventRouter,
    FatalHandler,
    OutputSink,
    Waiting,
)
from agentstream.runtime.records import InputRecord, KeyRecord, KeyStateBackend
from agentstream.runtime.step import ActionStep

__all__ = ["DEFAULT_MAX_EVENTS_PER_INPUT", "ErrorHandler", "EventRouter", "Operator", "OutputSink"]

log = logging.getLogger(__name__)

DONE: Final = _adopt.DONE
adopt: Final = _adopt.adopt
first_step: Final = _adopt.first_step
_clock: Final = time.perf_counter
DEFAULT_MAX_EVENTS_PER_INPUT: Final = 1000
# InputEvent(**fields) without pydantic's Python-level __init__ (one is built per input).
_new_input_event: Callable[[dict[str, Any]], InputEvent] = (
    InputEvent.__pydantic_validator__.validate_python
)


class Operator(ActionStep):
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
        metrics = metrics or RuntimeMetrics()
        event_time = EventTimeTracker()
        self._runners: dict[Hashable, asyncio.Task[None]] = {}
        counts = RuntimeCounts(metrics, event_time, self._runners)
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
            always_replay,
            executor,
            barrier,
            action_timeout_s,
            max_events_per_input,
            strict,
        )
        self.key_state = key_state
        self.fatal: list[BaseException] = []
        # The state methods of the hot path, bound once (a protocol's method is otherwise
        # looked up by name on every call).
        self._get_key: Callable[[Hashable], KeyRecord | None] = key_state.get
        self._put_key: Callable[..., None] = key_state.put
        self._get_memory: Callable[[Hashable], dict[str, Any] | None] = key_state.memory
        self._has_input: Callable[[Hashable, int], bool] = action_states.has_input
        self._prune_input: Callable[[Hashable, int], None] = action_states.prune
        self._on_fatal = on_fatal
        self._limit = ConcurrencyLimit(max_concurrency)
        self._prune_finished = prune_finished
        self._per_partition = per_partition
        self._runs: dict[Hashable, KeyRun] = {}  # the key's input in progress (holds a permit)
        self._finished: list[tuple[Hashable, int]] = []
        self.inputs_in_flight = 0  # accepted (running, queued or pending) and not finished
        self._incarnation = uuid.uuid4().hex[:8]
        self._attempts = 0  # runs started (an input's attempt number tags its routed events)
        counts.register()

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
        self.inputs_in_flight += 1
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
                self.inputs_in_flight += 1
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
                self.inputs_in_flight -= 1 + len(rec.pending)

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

    # -- the key loop ----------------------------------------------------------------
    #
    # Each step is a plain function that either finishes (returns None) or returns what to
    # await before the input can go on. An input whose steps never wait is processed
    # inline: no task, no coroutine of the runtime's own, no trip through the event loop.
    # At its first wait the key gets a runner task that takes over from there.

    def _start(self, slot: Hashable, rec: KeyRecord) -> None:
        """Run the key's inputs inline until one waits; then hand the key to a task."""
        try:
            while self._limit.acquire(slot):
                run = self._begin_input(slot, rec)
                waiting = self._advance(run)
                if waiting is not None:
                    self._spawn(slot, self._run_key(slot, run, waiting))
                    return
                rec = self._finish_input(slot, run, rec)  # nothing ran in between: rec is current
                if rec.current is None:
                    return
        except Exception as exc:
            self._crashed(slot, exc)

    def _run_waiting(self, slot: Hashable) -> bool:
        """Run a key that waited for a permit (False: it has nothing to run any more)."""
        rec = self._get_key(slot)
        if rec is None or rec.current is None:
            return False
        self._spawn(slot, self._run_key(slot, None, None, rec))
        return True

    def _spawn(self, slot: Hashable, runner: Coroutine[Any, Any, None]) -> None:
        """Give the key a runner task.

        The runner is stepped inline first, so that it is already inside its ``try`` (and
        cleans up after itself) even if the task is cancelled before it ever runs.
        """
        waiting_on = first_step(runner)
        if waiting_on is DONE:
            return
        self._runners[slot] = asyncio.create_task(adopt(runner, waiting_on), name=f"key:{slot!r}")

    async def _run_key(
        self,
        slot: Hashable,
        run: KeyRun | None,
        waiting: Waiting,
        rec: KeyRecord | None = None,
    ) -> None:
        """A key's runner task: finishes ``run`` (waiting on ``waiting``), then the next
        inputs; with ``run`` None, starts the current input of ``rec`` (given a permit)."""
        try:
            while True:
                if run is None:
                    assert rec is not None
                    run = self._begin_input(slot, rec)
                    waiting = self._advance(run)
                while waiting is not None:
                    await waiting
                    waiting = self._advance(run)
                rec = self._finish_input(slot, run, None)
                if rec.current is None or not self._limit.acquire(slot):
                    return
                run = None
        except Exception as exc:
            self._crashed(slot, exc)
        finally:
            self._runners.pop(slot, None)
            if self._runs.pop(slot, None) is not None:  # cancelled or crashed mid-input
                self._limit.release(self._run_waiting)

    def _crashed(self, slot: Hashable, exc: Exception) -> None:
        """A key's loop failed outside any step: the key cannot go on in this process."""
        log.error("the runner of key %r failed; stopping it", slot, exc_info=exc)
        if self._runs.pop(slot, None) is not None:
            self._limit.release(self._run_waiting)
        self.fatal.append(exc)
        if self._on_fatal is not None:
            self._on_fatal(exc)

    def _attempt(self) -> int:
        attempt = self._attempts
        self._attempts = attempt + 1
        return attempt

    def _begin_input(self, slot: Hashable, rec: KeyRecord) -> KeyRun:
        """Make the run of the key's current input and queue what its InputEvent triggers."""
        record = rec.current
        assert record is not None
        seq = rec.seq
        run = self._runs[slot] = KeyRun(
            slot,
            seq,
            record,
            self._attempt(),
            MemoryStore("short", self._get_memory(slot)),
            not self._has_input(slot, seq),
        )
        event = _new_input_event(
            {
                "input": record.value,
                "id": record.id or f"{record.key}:{seq}",
                "source_timestamp": record.timestamp,
            }
        )
        self._dispatch(run, event, None)
        return run

    def _advance(self, run: KeyRun) -> Waiting:
        """Run the input's queued actions until one waits; None once the input is done."""
        tasks = run.tasks
        while not run.aborted:
            if tasks:
                action, trigger = tasks.popleft()
                waiting = self._run_task(run, action, trigger)
                if waiting is not None:
                    return waiting
            elif run.in_flight:
                return self._routed_back(run)
            else:
                return None
        return None

    async def _routed_back(self, run: KeyRun) -> None:
        """Wait until a routed event of the input comes back (or the input is aborted)."""
        run.waiter = asyncio.get_running_loop().create_future()
        try:
            await run.waiter
        finally:
            run.waiter = None

    def _finish_input(self, slot: Hashable, run: KeyRun, rec: KeyRecord | None) -> KeyRecord:
        """Record the input as done, give its permit back and make the next pending input
        current; returns the key's record.

        ``rec`` is the key's record if the caller holds the current one (None: read it).
        """
        if rec is None:
            rec = self._get_key(slot) or KeyRecord(seq=run.seq)
        rec.current = None
        if rec.pending:
            rec.current = rec.pending.pop(0)
            rec.seq += 1
            self._counts.pending -= 1
        self._put_key(slot, rec, run.short)
        if self._prune_finished:
            self._prune_input(slot, run.seq)
        else:
            self._finished.append((slot, run.seq))
        self.inputs_in_flight -= 1
        record = run.record
        if record.timestamp is not None:
            self.event_time.finished(record.partition, record.timestamp)
        del self._runs[slot]
        self._limit.release(self._run_waiting)
        return rec
