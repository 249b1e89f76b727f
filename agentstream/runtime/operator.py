"""The :class:`Operator`: the broker-agnostic keyed event processor.

The Kafka service and the in-process runner drive the same operator. It talks to state
only through :class:`KeyStateBackend` and :class:`ActionStateStore`, and to the outside
only through an :class:`OutputSink` and, optionally, an :class:`EventRouter`.

Design note (mirrors Flink Agents' ActionExecutionOperator)::

    on_input(record) ── key busy? ── yes ──► KeyRecord.pending (one write)
                          │ no
                          ▼
           seq += 1, current = record (one write) ──► run the key's input
    input: InputEvent ─► dispatch ─► tasks (action, event) run one at a time
       task: completed record in the action-state store? ─► replay it (memory updates
             re-applied, sent events moved on with the same ids)
             else run it ─► record ActionState ─► move its sent events on
       sent events: OutputEvent ─► sink; other ─► router (internal topic) or straight
       back to dispatch; the input is done when no task is queued and no routed
       event is in flight ─► memory saved, next pending input started (one write).

    The key's inputs run inline in on_input until a step has to wait (an action awaits,
    the sink or router sends, the barrier flushes); the key then gets a task that goes
    on from that point. Sync actions over in-memory state never touch the event loop.

Recovery re-runs a key's current input from its InputEvent: completed actions replay
from their records (same event ids), unfinished ones run again, serving their recorded
durable calls. Routed events carry a tag (seq and attempt); events of an earlier attempt
are dropped, so a restart never processes an event twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import types
import uuid
from collections import defaultdict, deque
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Sequence,
)
from concurrent.futures import Executor
from typing import Any, Final, Protocol

from agentstream.api.agent import Action, Agent
from agentstream.api.events import Event, InputEvent, OutputEvent
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ActionExecutionError, NonDeterministicActionError
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.histogram import HistogramCounts
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime import adopt as _adopt
from agentstream.runtime.action_state import ActionState, ActionStateStore, new_action_state
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, Snapshot, apply_updates
from agentstream.runtime.records import InputRecord, KeyRecord, KeyStateBackend
from agentstream.serde import encode_event, unpack_event

__all__ = ["ErrorHandler", "EventRouter", "Operator", "OutputSink"]

log = logging.getLogger(__name__)

# Final: the compiled build keeps these in C variables (a plain global is a dict lookup).
_clock: Final = time.perf_counter
_CoroutineType: Final = types.CoroutineType
DONE: Final = _adopt.DONE
adopt: Final = _adopt.adopt
first_step: Final = _adopt.first_step
# InputEvent(**fields) without pydantic's Python-level __init__ (one is built per input).
_new_input_event: Callable[[dict[str, Any]], InputEvent] = (
    InputEvent.__pydantic_validator__.validate_python
)


class OutputSink(Protocol):
    """Where OutputEvents go."""

    def emit(
        self, key: Any, event: OutputEvent, record: InputRecord, watermark: int | None
    ) -> Awaitable[None] | None:
        """Deliver one output of ``record``'s input; may return something to await (an
        ``async def`` does), which the key's input then waits for."""


class EventRouter(Protocol):
    """Carries a non-output event to be processed again (the service's internal topic)."""

    async def route(
        self, key: Any, tag: str, event: Event, packed: bytes, sender: str, record: InputRecord
    ) -> None:
        """Send ``event`` (``packed`` is its :func:`~agentstream.serde.pack_event` form);
        the consumer calls :meth:`Operator.on_routed_event` with it."""


ErrorHandler = Callable[[ActionExecutionError, Event, InputRecord], Awaitable[None]]

# What a step of the key runner returns: None when it is done, else what to await first.
Waiting = Awaitable[None] | None


class _KeyRun:
    """In-memory state of one key's current input (rebuilt from state after a crash).

    Built per input, so everything not every input needs (sensory memory, the wake-up
    future, the routing tag) is made on first use.
    """

    __slots__ = ("_sensory", "_tag", "aborted", "attempt", "fresh", "in_flight", "key",
                 "record", "seq", "short", "tasks", "waiter")  # fmt: skip

    def __init__(
        self,
        key: Any,
        seq: int,
        record: InputRecord,
        attempt: int,
        short: MemoryStore,
        fresh: bool,
    ):
        self.key = key
        self.seq = seq
        self.record = record
        self.attempt = attempt
        self.short = short
        self.fresh = fresh  # no action run of this input was recorded before this attempt
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

    def apply(self, updates: Iterable[MemoryUpdate]) -> None:
        """Re-apply an action run's recorded memory updates."""
        apply_updates({"short": self.short, "sensory": self.sensory}, updates)

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


class _Counts:
    """The operator's hot-path counts, and what the metrics read of the operator.

    The runtime counts in plain ints (a Prometheus ``inc`` takes a lock) and :meth:`flush`
    moves the counts into the metrics whenever the registry is collected. The metrics'
    hooks hold this object, not the operator: the operator holds the metrics, so a hook
    bound to it would close a reference cycle, and a dropped operator, with all the state
    it keeps, would then live on until a full pass of the cycle collector.
    """

    __slots__ = ("actions", "children", "durations", "event_time", "events", "metrics",
                 "outputs", "pending", "runners")  # fmt: skip

    def __init__(
        self,
        metrics: RuntimeMetrics,
        event_time: EventTimeTracker,
        runners: dict[Hashable, asyncio.Task[None]],
    ):
        self.metrics = metrics
        self.event_time = event_time
        self.runners = runners
        self.children: dict[tuple[int, str], Any] = {}
        self.durations: dict[str, HistogramCounts] = {}
        self.events: defaultdict[type[Event], int] = defaultdict(int)
        self.actions: defaultdict[str, int] = defaultdict(int)
        self.outputs = 0
        self.pending = 0

    def register(self) -> None:
        metrics = self.metrics
        metrics.busy_keys.set_function(self.busy_keys)
        metrics.pending_inputs.set_function(self.pending_inputs)
        metrics.on_collect(self.flush)

    def busy_keys(self) -> int:
        return len(self.runners)

    def pending_inputs(self) -> int:
        return self.pending

    def flush(self) -> None:
        metrics = self.metrics
        events, self.events = self.events, defaultdict(int)
        for event_type, count in events.items():
            self.child(metrics.events_processed, event_type.type_name()).inc(count)
        actions, self.actions = self.actions, defaultdict(int)
        for name, count in actions.items():
            self.child(metrics.actions_executed, name).inc(count)
        if self.outputs:
            metrics.outputs_emitted.inc(self.outputs)
            self.outputs = 0
        for partition in self.event_time.partitions():
            watermark = self.event_time.watermark(partition)
            if watermark is not None:
                self.child(metrics.watermark_ms, str(partition)).set(watermark)

    def duration(self, action: str) -> HistogramCounts:
        """The ``action_duration_seconds`` child of ``action`` (one observation per run)."""
        counts = self.durations.get(action)
        if counts is None:
            counts = self.durations[action] = self.metrics.action_duration_seconds.labels(action)
        return counts

    def child(self, metric: Any, value: str) -> Any:
        """``metric.labels(value)``, cached: prometheus' own lookup is slow on a hot path."""
        key = (id(metric), value)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = metric.labels(value)
        return child


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
        prune_finished: drop an input's action state as soon as the input finishes,
            instead of listing it for :meth:`prune` (nothing is left to replay).
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
        prune_finished: bool = False,
    ):
        self.agent = agent
        self.key_state = key_state
        self.action_states = action_states
        # The state methods of the hot path, bound once (a protocol's method is otherwise
        # looked up by name on every call).
        self._get_key: Callable[[Hashable], KeyRecord | None] = key_state.get
        self._put_key: Callable[[Hashable, KeyRecord], None] = key_state.put
        self._put_state: Callable[[Hashable, int, str, str, ActionState], None] = action_states.put
        self._has_input: Callable[[Hashable, int], bool] = action_states.has_input
        self._prune_input: Callable[[Hashable, int], None] = action_states.prune
        self.metrics = metrics or RuntimeMetrics()
        self.event_time = EventTimeTracker()
        self.failures: list[ActionExecutionError] = []
        self._emit_output = output.emit  # bound once, like the state methods
        self._router = router
        self._event_logger = event_logger
        self._on_error = on_error
        self._always_replay = always_replay
        self._max_concurrency = max_concurrency
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._executor = executor
        self._barrier = barrier
        self._prune_finished = prune_finished
        self._runners: dict[Hashable, asyncio.Task[None]] = {}
        self._counts = _Counts(self.metrics, self.event_time, self._runners)
        self._runs: dict[Hashable, _KeyRun] = {}
        self._finished: list[tuple[Hashable, int]] = []
        self.inputs_in_flight = 0  # accepted (running or pending) and not finished
        self._incarnation = uuid.uuid4().hex[:8]
        self._attempts = 0  # runs started (an input's attempt number tags its routed events)
        self._groups: dict[str, tuple[MetricGroup, MetricGroup]] = {}
        self._actions: dict[type[Event], tuple[Action, ...]] = {}  # agent.actions_for, cached
        self._counts.register()

    # -- inputs ------------------------------------------------------------------

    def on_input(self, record: InputRecord) -> bool:
        """Accept an input: start it, or queue it behind the key's current input.

        Returns False for a redelivered record (its offset was already accepted).
        """
        key = record.key
        rec = self._get_key(key)
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
            self._put_key(key, rec)
            self._counts.pending += 1
            return True
        rec.seq += 1
        rec.current = record
        self._put_key(key, rec)
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
            self._counts.pending += len(rec.pending)
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
                self._counts.pending -= len(rec.pending)
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
    #
    # Each step is a plain function that either finishes (returns None) or returns what to
    # await before the input can go on. An input whose steps never wait (sync or
    # non-suspending actions, in-memory state, the in-process sink) is processed inline:
    # no task, no coroutine of the runtime's own, no trip through the event loop. At its
    # first wait the key gets a runner task that takes over from there.

    def _start(self, key: Hashable, rec: KeyRecord) -> None:
        """Process the key's inputs inline until one waits; then hand the key to a task."""
        if self._max_concurrency:
            self._spawn(key, self._run_limited(key, rec))
            return
        try:
            while True:
                run = self._begin_input(key, rec)
                waiting = self._advance(run)
                if waiting is not None:
                    self._spawn(key, self._run_key(key, run, waiting))
                    return
                rec = self._finish_input(key, run, rec)  # nothing ran in between: rec is current
                if rec.current is None:
                    return
        finally:
            if key not in self._runners:
                self._runs.pop(key, None)

    def _spawn(self, key: Hashable, runner: Coroutine[Any, Any, None]) -> None:
        """Give the key a runner task.

        The runner is stepped inline first, so that it is already inside its ``try`` (and
        cleans up after itself) even if the task is cancelled before it ever runs.
        """
        waiting_on = first_step(runner)
        if waiting_on is DONE:
            return
        self._runners[key] = asyncio.create_task(adopt(runner, waiting_on), name=f"key:{key!r}")

    async def _run_key(self, key: Hashable, run: _KeyRun, waiting: Waiting) -> None:
        """A key's runner task: finishes ``run`` (waiting on ``waiting``), then the next inputs."""
        try:
            while True:
                await self._settle(run, waiting)
                rec = self._finish_input(key, run, None)
                if rec.current is None:
                    return
                run = self._begin_input(key, rec)
                waiting = self._advance(run)
        finally:
            self._runs.pop(key, None)
            self._runners.pop(key, None)

    async def _run_limited(self, key: Hashable, rec: KeyRecord) -> None:
        """A key's runner task under ``max_concurrency``: each input holds a slot."""
        try:
            while rec.current is not None:
                async with self._semaphore():
                    run = self._begin_input(key, rec)
                    await self._settle(run, self._advance(run))
                rec = self._finish_input(key, run, None)
        finally:
            self._runs.pop(key, None)
            self._runners.pop(key, None)

    async def _settle(self, run: _KeyRun, waiting: Waiting) -> None:
        """Await what the input waits on and go on with it, until the input is done."""
        while waiting is not None:
            await waiting
            waiting = self._advance(run)

    def flush_metrics(self) -> None:
        """Move the hot-path counts into the Prometheus metrics (runs on every collection)."""
        self._counts.flush()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self._max_concurrency or 1))
        return self._limit[1]

    def _finish_input(self, key: Hashable, run: _KeyRun, rec: KeyRecord | None) -> KeyRecord:
        """Record the input as done and start the next pending one; returns the record.

        ``rec`` is the key's record if the caller holds the current one (None: read it).
        """
        if rec is None:
            rec = self._get_key(key) or KeyRecord(seq=run.seq)
        rec.memory = run.short.dump()
        rec.current = None
        if rec.pending:
            rec.current = rec.pending.pop(0)
            rec.seq += 1
            self._counts.pending -= 1
        self._put_key(key, rec)
        if self._prune_finished:
            self._prune_input(key, run.seq)
        else:
            self._finished.append((key, run.seq))
        self.inputs_in_flight -= 1
        record = run.record
        if record.timestamp is not None:
            self.event_time.finished(record.partition, record.timestamp)
        return rec

    def _attempt(self) -> int:
        attempt = self._attempts
        self._attempts = attempt + 1
        return attempt

    def _begin_input(self, key: Hashable, rec: KeyRecord) -> _KeyRun:
        """Make the run of the key's current input and queue what its InputEvent triggers."""
        record = rec.current
        assert record is not None
        seq = rec.seq
        run = self._runs[key] = _KeyRun(
            key,
            seq,
            record,
            self._attempt(),
            MemoryStore("short", rec.memory),
            not self._has_input(key, seq),
        )
        event = _new_input_event(
            {
                "input": record.value,
                "id": record.id or f"{key}:{seq}",
                "source_timestamp": record.timestamp,
            }
        )
        self._dispatch(run, event, None)
        return run

    def _advance(self, run: _KeyRun) -> Waiting:
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

    async def _routed_back(self, run: _KeyRun) -> None:
        """Wait until a routed event of the input comes back (or the input is aborted)."""
        run.waiter = asyncio.get_running_loop().create_future()
        try:
            await run.waiter
        finally:
            run.waiter = None

    def _dispatch(self, run: _KeyRun, event: Event, sender: str | None) -> None:
        """Process a non-output event: log and count it, queue the actions it triggers."""
        if self._event_logger is not None:
            self._event_logger.append(EventLogRecord(time.time(), run.key, run.seq, event, sender))
        event_type = type(event)
        self._counts.events[event_type] += 1
        actions = self._actions.get(event_type)
        if actions is None:
            actions = self._actions[event_type] = self.agent.actions_for(event_type)
        for action in actions:
            run.tasks.append((action, event))

    def _emit(self, run: _KeyRun, event: OutputEvent, sender: str) -> Waiting:
        if self._event_logger is not None:
            self._event_logger.append(EventLogRecord(time.time(), run.key, run.seq, event, sender))
        self._counts.events[type(event)] += 1
        self._counts.outputs += 1
        record = run.record
        watermark = self.event_time.watermark(record.partition)
        return self._emit_output(run.key, event, record, watermark)

    def _send_on(
        self, run: _KeyRun, events: Sequence[Event], packed: Sequence[bytes], sender: str
    ) -> Waiting:
        """Move an action's sent events on: outputs out, others to their actions."""
        for index, event in enumerate(events):
            waiting = self._send_one(run, event, packed[index], sender)
            if waiting is not None:
                return self._send_rest(run, events, packed, sender, index + 1, waiting)
        return None

    async def _send_rest(
        self,
        run: _KeyRun,
        events: Sequence[Event],
        packed: Sequence[bytes],
        sender: str,
        start: int,
        waiting: Awaitable[None],
    ) -> None:
        """:meth:`_send_on` from the first send that waits: the rest go one after another."""
        await waiting
        for index in range(start, len(events)):
            waiting_on = self._send_one(run, events[index], packed[index], sender)
            if waiting_on is not None:
                await waiting_on

    def _send_one(self, run: _KeyRun, event: Event, packed: bytes, sender: str) -> Waiting:
        if isinstance(event, OutputEvent):
            return self._emit(run, event, sender)
        router = self._router
        if router is None:
            self._dispatch(run, event, sender)
            return None
        assert event.id is not None
        if run.in_flight is None:
            run.in_flight = set()
        run.in_flight.add(event.id)
        return router.route(run.key, run.tag(self._incarnation), event, packed, sender, run.record)

    # -- the context's host (ContextHost) -------------------------------------------

    def executor_for_calls(self) -> Executor | None:
        return self._executor

    def barrier_for_calls(self) -> Callable[[], Awaitable[None]] | None:
        return self._barrier

    def persist_calls(self, ctx: RunnerContextImpl) -> None:
        """An action's durable call finished (or started): record it before going on."""
        self._put_state(
            ctx.key,
            ctx.seq,
            ctx.action_name,
            ctx.event_id,
            new_action_state(False, calls=tuple(ctx.calls)),
        )

    def replayed_call(self, ctx: RunnerContextImpl) -> None:
        self._counts.child(self.metrics.durable_calls_replayed, ctx.action_name).inc()

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

    def _run_task(self, run: _KeyRun, action: Action, event: Event) -> Waiting:
        name, event_id, key, seq = action.name, event.id, run.key, run.seq
        assert event_id is not None
        # A fresh input's runs cannot be recorded yet: each (action, event) runs once per
        # attempt, so only what an earlier attempt left behind needs looking up.
        state = None if run.fresh else self.action_states.get(key, seq, name, event_id)
        if state is not None and state.completed:
            packed: Sequence[bytes] = state.sent_events
            events: Sequence[Event] = [unpack_event(e) for e in packed]
            run.apply(state.memory_updates)
            self._counts.child(self.metrics.actions_replayed, name).inc()
            return self._send_on(run, events, packed, name)
        # Memory as of the action's start (copy on write: free until the first write), so
        # that a failed action's writes are rolled back.
        snapshot = run.snapshot()
        ctx = RunnerContextImpl(self, action, event, key, seq, run, state)
        started = _clock()
        try:
            result = action.fn(event, ctx)
            if type(result) is _CoroutineType:
                waiting_on = first_step(result)
                if waiting_on is not DONE:
                    rest = adopt(result, waiting_on)
                    return self._action_waits(run, ctx, snapshot, started, rest)
            elif result is not None and inspect.isawaitable(result):
                return self._action_waits(run, ctx, snapshot, started, result)
        except Exception as exc:
            return self._action_ended(run, action, event, ctx, snapshot, started, exc)
        except BaseException:
            ctx.close()
            raise
        return self._action_ended(run, action, event, ctx, snapshot, started, None)

    async def _action_waits(
        self,
        run: _KeyRun,
        ctx: RunnerContextImpl,
        snapshot: tuple[Snapshot, Snapshot | None],
        started: float,
        rest: Awaitable[Any],
    ) -> None:
        """An action that waits: await the ``rest`` of it, then end the step as above (the
        context knows its action and event)."""
        error: Exception | None = None
        try:
            await rest
        except Exception as exc:
            error = exc
        except BaseException:
            ctx.close()
            raise
        then = self._action_ended(run, ctx.action, ctx.event, ctx, snapshot, started, error)
        if then is not None:
            await then

    def _action_ended(
        self,
        run: _KeyRun,
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
        ctx.close()
        self._counts.duration(name).observe(_clock() - started)
        assert event.id is not None
        if error is not None:
            run.restore(snapshot)
            self._counts.child(self.metrics.action_failures, name).inc()
            failure = ActionExecutionError(run.key, name, event.id, run.seq, error)
            return self._fail(run, failure, event)
        packed = ctx.packed_events
        self._put_state(
            run.key,
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
        self, run: _KeyRun, ctx: RunnerContextImpl, snapshot: tuple[Snapshot, Snapshot | None]
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
                events = await self._replay_check(run, action, event, snapshot)
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

    def _fail(self, run: _KeyRun, error: ActionExecutionError, event: Event) -> Waiting:
        if self._on_error is not None:
            return self._on_error(error, event, run.record)
        log.error("%s", error)
        self.failures.append(error)
        run.aborted = True
        run.tasks.clear()
        run.in_flight = None
        return None

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
        run.apply(recorded.memory_updates)

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
