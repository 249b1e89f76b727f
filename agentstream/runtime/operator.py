"""The :class:`Operator`: the broker-agnostic keyed event processor.

The Kafka service and the in-process runner drive the same operator. It talks to state
only through :class:`KeyStateBackend` and :class:`ActionStateStore`, and to the outside
only through an :class:`OutputSink` and, optionally, an :class:`EventRouter`.

Design note (mirrors Flink Agents' ActionExecutionOperator)::

    on_input(record) ── key busy? ── yes ──► KeyRecord.pending (one write)
                          │ no
                          ▼
           seq += 1, current = record (one write) ──► key runner task
    key runner: InputEvent ─► process_event ─► tasks (action, event) run one at a time
       task: completed record in the action-state store? ─► ActionRun(replayed=True)
             else run it ─► record ActionState ─► ActionRun(replayed=False)
       sent events: OutputEvent ─► sink; other ─► router (internal topic) or straight
       back to process_event; the input is done when no task is queued and no routed
       event is in flight ─► memory saved, next pending input started (one write).

Recovery re-runs a key's current input from its InputEvent: completed actions replay
from their records (same event ids), unfinished ones run again, serving their recorded
durable calls. Routed events carry a tag (seq and attempt); events of an earlier attempt
are dropped, so a restart never processes an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
import types
import uuid
from collections import defaultdict, deque
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterable,
    Sequence,
)
from concurrent.futures import Executor
from typing import Any, Protocol

from agentstream.api.agent import Action, Agent
from agentstream.api.events import Event, InputEvent, OutputEvent
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ActionExecutionError, NonDeterministicActionError
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.action_state import ActionState, ActionStateStore
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.memory import MemoryStore, Snapshot, apply_updates
from agentstream.runtime.records import InputRecord, KeyRecord, KeyStateBackend
from agentstream.serde import encode_event, unpack_event

__all__ = ["ErrorHandler", "EventRouter", "Operator", "OutputSink"]

log = logging.getLogger(__name__)


class OutputSink(Protocol):
    """Where OutputEvents go."""

    async def emit(
        self, key: Any, event: OutputEvent, record: InputRecord, watermark: int | None
    ) -> None:
        """Deliver one output of ``record``'s input."""


class EventRouter(Protocol):
    """Carries a non-output event to be processed again (the service's internal topic)."""

    async def route(
        self, key: Any, tag: str, event: Event, packed: bytes, sender: str, record: InputRecord
    ) -> None:
        """Send ``event`` (``packed`` is its :func:`~agentstream.serde.pack_event` form);
        the consumer calls :meth:`Operator.on_routed_event` with it."""


ErrorHandler = Callable[[ActionExecutionError, Event, InputRecord], Awaitable[None]]


class _KeyRun:
    """In-memory state of one key's current input (rebuilt from state after a crash).

    Built per input, so everything not every input needs (sensory memory, the wake-up
    future, the routing tag) is made on first use.
    """

    __slots__ = ("_sensory", "_tag", "aborted", "attempt", "in_flight", "key", "record",
                 "seq", "short", "tasks", "waiter")  # fmt: skip

    def __init__(self, key: Any, seq: int, record: InputRecord, attempt: int, short: MemoryStore):
        self.key = key
        self.seq = seq
        self.record = record
        self.attempt = attempt
        self.short = short
        self._sensory: MemoryStore | None = None
        self._tag: str | None = None
        self.tasks: deque[tuple[Action, Event]] = deque()
        self.in_flight: set[str] | None = None  # ids of routed events not yet back
        self.waiter: asyncio.Future[None] | None = None
        self.aborted = False

    @property
    def sensory(self) -> MemoryStore:
        if self._sensory is None:
            self._sensory = MemoryStore("sensory")
        return self._sensory

    def tag(self, incarnation: str) -> str:
        if self._tag is None:
            self._tag = f"{self.seq}:{incarnation}:{self.attempt}"
        return self._tag

    def snapshot(self) -> tuple[Snapshot, Snapshot | None]:
        sensory = self._sensory
        return self.short.snapshot(), None if sensory is None else sensory.snapshot()

    def restore(self, snapshot: tuple[Snapshot, Snapshot | None]) -> None:
        short, sensory = snapshot
        self.short.restore(short)
        if sensory is None:
            self._sensory = None
        else:
            self.sensory.restore(sensory)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class _Verification:
    """Copies of a run's memory for the "always replay" check."""

    __slots__ = ("sensory", "short")

    def __init__(self, short: MemoryStore, sensory: MemoryStore):
        self.short = short
        self.sensory = sensory


@types.coroutine
def _adopt(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Continue a coroutine, already stepped once by hand, inside a task.

    The future it yielded is passed up to the task unchanged, so the task waits on it
    exactly as if it had run the coroutine from the start.
    """
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # cancellation and the like go to the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return


class Operator:
    """Processes keyed inputs with Flink Agents' event-processing semantics.

    Args:
        agent: the agent whose actions run.
        key_state: per-key bookkeeping (seq, current and pending inputs, memory).
        action_states: where action runs are recorded for replay-skip.
        output: receives OutputEvents.
        router: carries other sent events through a topic; None processes them at once.
        event_logger: receives one record per processed event.
        metrics: built-in and user metrics (a fresh registry if None).
        on_error: called with each ActionExecutionError (the service dead-letters); None
            aborts the input and keeps the error in :attr:`failures`.
        always_replay: after each action, rebuild from its record and re-run it to check
            that it is deterministic.
        max_concurrency: how many keys may process an input at once (None: no cap).
        executor: thread pool for blocking ``durable_execute_async`` functions.
        barrier: awaited after an action or durable call is recorded, before anything
            depends on it: the service makes the record durable there, so a completed
            action or call is never run again after a crash.
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
        always_replay: bool = False,
        max_concurrency: int | None = None,
        executor: Executor | None = None,
        barrier: Callable[[], Awaitable[None]] | None = None,
    ):
        self.agent = agent
        self.key_state = key_state
        self.action_states = action_states
        self.metrics = metrics or RuntimeMetrics()
        self.event_time = EventTimeTracker()
        self.failures: list[ActionExecutionError] = []
        self._output = output
        self._router = router
        self._event_logger = event_logger
        self._on_error = on_error
        self._always_replay = always_replay
        self._max_concurrency = max_concurrency
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._executor = executor
        self._barrier = barrier
        self._children: dict[tuple[int, str], Any] = {}
        # Hot-path counts are plain ints (a Prometheus inc takes a lock), moved to the
        # counters by flush_metrics(); gauges are read from the operator at collection.
        self._event_counts: defaultdict[type[Event], int] = defaultdict(int)
        self._action_counts: defaultdict[str, int] = defaultdict(int)
        self._outputs = 0
        self._pending = 0
        self._runners: dict[Hashable, asyncio.Task[None]] = {}
        self._runs: dict[Hashable, _KeyRun] = {}
        self._finished: list[tuple[Hashable, int]] = []
        self.inputs_in_flight = 0  # accepted (running or pending) and not finished
        self._incarnation = uuid.uuid4().hex[:8]
        self._attempts = itertools.count()
        self._groups: dict[str, tuple[MetricGroup, MetricGroup]] = {}
        self.metrics.busy_keys.set_function(self.busy_keys)
        self.metrics.pending_inputs.set_function(lambda: self._pending)
        self.metrics.on_collect(self.flush_metrics)

    # -- inputs ------------------------------------------------------------------

    def on_input(self, record: InputRecord) -> bool:
        """Accept an input: start it, or queue it behind the key's current input.

        Returns False for a redelivered record (its offset was already accepted).
        """
        key = record.key
        rec = self.key_state.get(key)
        if rec is None:
            rec = KeyRecord()
        if record.offset is not None:
            if record.offset <= rec.last_offset:
                return False
            rec.last_offset = record.offset
        if record.timestamp is not None:
            self.event_time.started(record.partition, record.timestamp)
        self.inputs_in_flight += 1
        if rec.current is not None or key in self._runners:
            rec.pending.append(record)
            self.key_state.put(key, rec)
            self._pending += 1
            return True
        rec.seq += 1
        rec.current = record
        self.key_state.put(key, rec)
        self._start(key, rec)
        return True

    def resume(self, keys: Iterable[Hashable]) -> int:
        """Restart the in-flight inputs of ``keys`` after a restart or rebalance.

        Returns how many keys were resumed.
        """
        resumed = 0
        for key in keys:
            rec = self.key_state.get(key)
            if rec is None or rec.current is None or key in self._runners:
                continue
            for record in (rec.current, *rec.pending):
                self.event_time.started(record.partition, record.timestamp)
                self.inputs_in_flight += 1
            self._pending += len(rec.pending)
            self._start(key, rec)
            resumed += 1
        return resumed

    async def cancel(self, predicate: Callable[[InputRecord], bool]) -> None:
        """Stop the runners whose current input matches (its partition was revoked)."""
        doomed = [
            (key, task)
            for key, task in self._runners.items()
            if (run := self._runs.get(key)) is not None and predicate(run.record)
        ]
        for _, task in doomed:
            task.cancel()
        for key, task in doomed:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            rec = self.key_state.get(key)
            if rec is not None:
                self._pending -= len(rec.pending)
                self.inputs_in_flight -= 1 + len(rec.pending)

    def busy_keys(self) -> int:
        return len(self._runners)

    async def drain(self) -> None:
        """Wait until every key is idle."""
        while self._runners:
            await asyncio.gather(*list(self._runners.values()))

    @property
    def finished_count(self) -> int:
        """How many inputs finished since the last :meth:`prune`."""
        return len(self._finished)

    def finished_inputs(self) -> list[tuple[Hashable, int]]:
        """(key, seq) of inputs finished since the last :meth:`prune`."""
        return list(self._finished)

    def prune(self, upto: int | None = None) -> None:
        """Drop the action state of finished inputs (the first ``upto`` of them).

        The service calls this once the inputs' state and offsets are committed; never
        touches an input still in flight (those are not in the finished list).
        """
        count = len(self._finished) if upto is None else upto
        prune = self.action_states.prune
        for key, seq in self._finished[:count]:
            prune(key, seq)
        del self._finished[:count]

    # -- routed events -------------------------------------------------------------

    async def on_routed_event(self, key: Any, tag: str, event: Event, sender: str) -> bool:
        """An event sent through the router came back; False if stale or a duplicate."""
        run = self._runs.get(key)
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

    # -- the key runner ------------------------------------------------------------

    def _start(self, key: Hashable, rec: KeyRecord) -> None:
        """Run the key's input inline until it first waits; only then give it a task.

        An input whose actions never wait (sync actions, in-memory state) is processed
        without creating a task or a trip through the event loop.
        """
        coro = self._run_key(key, rec)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        self._runners[key] = asyncio.create_task(_adopt(coro, waiting_on), name=f"key:{key!r}")

    async def _run_key(self, key: Hashable, rec: KeyRecord | None) -> None:
        runs = self._runs
        try:
            while rec is not None and rec.current is not None:
                run = _KeyRun(
                    key,
                    rec.seq,
                    rec.current,
                    next(self._attempts),
                    MemoryStore("short", rec.memory),
                )
                runs[key] = run
                if self._max_concurrency:
                    async with self._semaphore():
                        await self._process_input(run)
                else:
                    await self._process_input(run)
                rec = self._finish_input(key, run)
        finally:
            runs.pop(key, None)
            self._runners.pop(key, None)

    def flush_metrics(self) -> None:
        """Move the hot-path counts into the Prometheus metrics (runs on every collection)."""
        metrics = self.metrics
        events, self._event_counts = self._event_counts, defaultdict(int)
        for event_type, count in events.items():
            self._child(metrics.events_processed, event_type.type_name()).inc(count)
        actions, self._action_counts = self._action_counts, defaultdict(int)
        for name, count in actions.items():
            self._child(metrics.actions_executed, name).inc(count)
        if self._outputs:
            metrics.outputs_emitted.inc(self._outputs)
            self._outputs = 0
        for partition in self.event_time.partitions():
            watermark = self.event_time.watermark(partition)
            if watermark is not None:
                self._child(metrics.watermark_ms, str(partition)).set(watermark)

    def _child(self, metric: Any, value: str) -> Any:
        """``metric.labels(value)``, cached: prometheus' own lookup is slow on a hot path."""
        key = (id(metric), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self._max_concurrency or 1))
        return self._limit[1]

    def _finish_input(self, key: Hashable, run: _KeyRun) -> KeyRecord | None:
        """Record the input as done and start the next pending one; returns the record."""
        rec = self.key_state.get(key) or KeyRecord(seq=run.seq)
        rec.memory = run.short.dump()
        rec.current = None
        if rec.pending:
            rec.current = rec.pending.pop(0)
            rec.seq += 1
            self._pending -= 1
        self.key_state.put(key, rec)
        self._finished.append((key, run.seq))
        self.inputs_in_flight -= 1
        record = run.record
        if record.timestamp is not None:
            self.event_time.finished(record.partition, record.timestamp)
        return rec

    async def _process_input(self, run: _KeyRun) -> None:
        record = run.record
        event = InputEvent(
            input=record.value,
            id=record.id or f"{run.key}:{run.seq}",
            source_timestamp=record.timestamp,
        )
        self._dispatch(run, event, None)
        tasks = run.tasks
        run_task = self._run_task
        while not run.aborted:
            if tasks:
                action, trigger = tasks.popleft()
                await run_task(run, action, trigger)
            elif run.in_flight:
                run.waiter = asyncio.get_running_loop().create_future()
                await run.waiter
                run.waiter = None
            else:
                return

    def _dispatch(self, run: _KeyRun, event: Event, sender: str | None) -> None:
        """Process a non-output event: log and count it, queue the actions it triggers."""
        if self._event_logger is not None:
            self._event_logger.append(EventLogRecord(time.time(), run.key, run.seq, event, sender))
        event_type = type(event)
        self._event_counts[event_type] += 1
        for action in self.agent.actions_for(event_type):
            run.tasks.append((action, event))

    async def _emit(self, run: _KeyRun, event: OutputEvent, sender: str) -> None:
        if self._event_logger is not None:
            self._event_logger.append(EventLogRecord(time.time(), run.key, run.seq, event, sender))
        self._event_counts[type(event)] += 1
        record = run.record
        await self._output.emit(run.key, event, record, self.event_time.watermark(record.partition))
        self._outputs += 1

    async def _send_on(
        self, run: _KeyRun, events: Sequence[Event], packed: Sequence[bytes], sender: str
    ) -> None:
        """Move an action's sent events on: outputs out, others to their actions."""
        router = self._router
        for event, data in zip(events, packed, strict=True):
            if isinstance(event, OutputEvent):
                await self._emit(run, event, sender)
            elif router is None:
                self._dispatch(run, event, sender)
            else:
                assert event.id is not None
                if run.in_flight is None:
                    run.in_flight = set()
                run.in_flight.add(event.id)
                await router.route(
                    run.key, run.tag(self._incarnation), event, data, sender, run.record
                )

    # -- the context's host (ContextHost) -------------------------------------------

    def executor_for_calls(self) -> Executor | None:
        return self._executor

    def barrier_for_calls(self) -> Callable[[], Awaitable[None]] | None:
        return self._barrier

    def persist_calls(self, ctx: RunnerContextImpl) -> None:
        """An action's durable call finished (or started): record it before going on."""
        self.action_states.put(
            ctx.key,
            ctx.seq,
            ctx.action_name,
            ctx.event_id,
            ActionState(completed=False, calls=tuple(ctx.calls)),
        )

    def replayed_call(self, ctx: RunnerContextImpl) -> None:
        self._child(self.metrics.durable_calls_replayed, ctx.action_name).inc()

    def metric_groups(self, action: str) -> tuple[MetricGroup, MetricGroup]:
        """(agent group, action group) of ``action``'s metrics."""
        groups = self._groups.get(action)
        if groups is None:
            groups = self._groups[action] = (
                self.metrics.agent_group(self.agent.name),
                self.metrics.action_group(self.agent.name, action),
            )
        return groups

    # -- one action step -------------------------------------------------------------

    async def _run_task(self, run: _KeyRun, action: Action, event: Event) -> None:
        name, event_id, key, seq = action.name, event.id, run.key, run.seq
        assert event_id is not None
        state = self.action_states.get(key, seq, name, event_id)
        if state is not None and state.completed:
            packed: Sequence[bytes] = state.sent_events
            events: Sequence[Event] = [unpack_event(e) for e in packed]
            apply_updates({"short": run.short, "sensory": run.sensory}, list(state.memory_updates))
            self._child(self.metrics.actions_replayed, name).inc()
            await self._send_on(run, events, packed, name)
            return
        # Memory as of the action's start (copy on write: free until the first write), so
        # that a failed action's writes are rolled back.
        snapshot = run.snapshot()
        ctx = RunnerContextImpl(self, action, event, key, seq, run, state)
        started = time.perf_counter()
        try:
            result = action.fn(event, ctx)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            run.restore(snapshot)
            self._child(self.metrics.action_failures, name).inc()
            await self._fail(run, ActionExecutionError(key, name, event_id, seq, exc), event)
            return
        finally:
            ctx.close()
            self._child(self.metrics.action_duration_seconds, name).observe(
                time.perf_counter() - started
            )
        packed = ctx.packed_events
        self.action_states.put(
            key,
            seq,
            name,
            event_id,
            ActionState(True, tuple(ctx.updates), tuple(packed), tuple(ctx.calls)),
        )
        if self._barrier is not None:
            # Durable before its events move on: a completed action never runs again.
            await self._barrier()
        self._action_counts[name] += 1
        events = ctx.events
        if self._always_replay:
            try:
                events = list(await self._replay_check(run, action, event, snapshot))
            except ReplayMismatch as exc:
                error = NonDeterministicActionError(key, name, event_id, seq, str(exc))
                await self._fail(run, error, event)
                return
        await self._send_on(run, events, packed, name)

    async def _fail(self, run: _KeyRun, error: ActionExecutionError, event: Event) -> None:
        if self._on_error is not None:
            await self._on_error(error, event, run.record)
            return
        log.error("%s", error)
        self.failures.append(error)
        run.aborted = True
        run.tasks.clear()
        run.in_flight = None

    async def _replay_check(
        self,
        run: _KeyRun,
        action: Action,
        event: Event,
        before: tuple[Snapshot, Snapshot | None],
    ) -> tuple[Event, ...]:
        """The "always replay" step: drop caches, rebuild from the record, re-run, compare."""
        assert event.id is not None
        recorded = self.action_states.get(run.key, run.seq, action.name, event.id)
        if recorded is None or not recorded.completed:
            raise ReplayMismatch("the action state store lost the record just written")
        events = tuple(unpack_event(e) for e in recorded.sent_events)
        run.restore(before)
        twin = _Verification(run.short.copy(), run.sensory.copy())
        apply_updates({"short": run.short, "sensory": run.sensory}, list(recorded.memory_updates))

        ctx = RunnerContextImpl(self, action, event, run.key, run.seq, twin, recorded, verify=True)
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
        again = [encode_event(e) for e in ctx.events]
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
        return events
