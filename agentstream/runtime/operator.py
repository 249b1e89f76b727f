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
from collections.abc import Awaitable, Callable, Coroutine, Generator, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentstream.api.agent import Action, Agent
from agentstream.api.events import Event, InputEvent, OutputEvent
from agentstream.errors import ActionExecutionError, NonDeterministicActionError
from agentstream.observability.eventlog import EventLogger, EventLogRecord
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.action_state import ActionRun, ActionState, ActionStateStore, CallRecord
from agentstream.runtime.context import ReplayMismatch, RunnerContextImpl
from agentstream.runtime.eventtime import EventTimeTracker
from agentstream.runtime.memory import MemoryStore, apply_updates
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
        self, key: Any, tag: str, event: Event, sender: str, record: InputRecord
    ) -> None:
        """Send ``event``; the consumer calls :meth:`Operator.on_routed_event` with it."""


ErrorHandler = Callable[[ActionExecutionError, Event, InputRecord], Awaitable[None]]


@dataclass(eq=False)
class _KeyRun:
    """In-memory state of one key's current input (rebuilt from state after a crash)."""

    key: Any
    seq: int
    record: InputRecord
    tag: str
    short: MemoryStore
    sensory: MemoryStore
    tasks: deque[tuple[Action, Event]] = field(default_factory=deque)
    in_flight: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: bool = False

    @property
    def stores(self) -> dict[str, MemoryStore]:
        return {"short": self.short, "sensory": self.sensory}


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
        # Per-event counts are tallied in a dict (a Prometheus inc takes a lock) and moved
        # to the counters by flush_metrics().
        self._tally: defaultdict[tuple[Any, str | None], int] = defaultdict(int)
        self._runners: dict[Hashable, asyncio.Task[None]] = {}
        self._runs: dict[Hashable, _KeyRun] = {}
        self._finished: list[tuple[Hashable, int]] = []
        self.inputs_in_flight = 0  # accepted (running or pending) and not finished
        self._incarnation = uuid.uuid4().hex[:8]
        self._attempts = itertools.count()
        self._agent_metrics = self.metrics.agent_group(agent.name)
        self._action_metrics = {
            a.name: self.metrics.action_group(agent.name, a.name) for a in agent.actions
        }

    # -- inputs ------------------------------------------------------------------

    def on_input(self, record: InputRecord) -> bool:
        """Accept an input: start it, or queue it behind the key's current input.

        Returns False for a redelivered record (its offset was already accepted).
        """
        key = record.key
        rec = self.key_state.get(key) or KeyRecord()
        if record.offset is not None:
            if record.offset <= rec.last_offset:
                return False
            rec.last_offset = record.offset
        self.event_time.started(record.partition, record.timestamp)
        self.inputs_in_flight += 1
        if rec.current is not None or key in self._runners:
            rec.pending.append(record)
            self.key_state.put(key, rec)
            self.metrics.pending_inputs.inc()
            return True
        rec.seq += 1
        rec.current = record
        self.key_state.put(key, rec)
        self._start(key)
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
            self.metrics.pending_inputs.inc(len(rec.pending))
            self._start(key)
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
                self.metrics.pending_inputs.dec(len(rec.pending))
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
        for key, seq in self._finished[:count]:
            self.action_states.prune(key, seq)
        del self._finished[:count]

    # -- routed events -------------------------------------------------------------

    async def on_routed_event(self, key: Any, tag: str, event: Event, sender: str) -> bool:
        """An event sent through the router came back; False if stale or a duplicate."""
        run = self._runs.get(key)
        if run is None or run.tag != tag or event.id not in run.in_flight:
            return False
        run.in_flight.discard(event.id)
        await self._process_event(run, event, sender)
        run.wake.set()
        return True

    # -- the key runner ------------------------------------------------------------

    def _start(self, key: Hashable) -> None:
        """Run the key's input inline until it first waits; only then give it a task.

        An input whose actions never wait (sync actions, in-memory state) is processed
        without creating a task or a trip through the event loop.
        """
        self.metrics.busy_keys.inc()
        coro = self._run_key(key)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return
        self._runners[key] = asyncio.create_task(_adopt(coro, waiting_on), name=f"key:{key!r}")

    async def _run_key(self, key: Hashable) -> None:
        try:
            while True:
                rec = self.key_state.get(key)
                if rec is None or rec.current is None:
                    return
                run = _KeyRun(
                    key=key,
                    seq=rec.seq,
                    record=rec.current,
                    tag=f"{rec.seq}:{self._incarnation}:{next(self._attempts)}",
                    short=MemoryStore("short", rec.memory),
                    sensory=MemoryStore("sensory"),
                )
                self._runs[key] = run
                if self._max_concurrency:
                    async with self._semaphore():
                        await self._process_input(run)
                else:
                    await self._process_input(run)
                self._finish_input(key, run)
        finally:
            self._runs.pop(key, None)
            self._runners.pop(key, None)
            self.metrics.busy_keys.dec()

    def flush_metrics(self) -> None:
        """Move the hot-path counts into the Prometheus counters (call before a scrape)."""
        tally, self._tally = self._tally, defaultdict(int)
        for (metric, label), count in tally.items():
            (metric if label is None else self._child(metric, label)).inc(count)

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

    def _finish_input(self, key: Hashable, run: _KeyRun) -> None:
        rec = self.key_state.get(key) or KeyRecord(seq=run.seq)
        rec.memory = run.short.dump()
        rec.current = None
        if rec.pending:
            rec.current = rec.pending.pop(0)
            rec.seq += 1
            self.metrics.pending_inputs.dec()
        self.key_state.put(key, rec)
        self._finished.append((key, run.seq))
        self.inputs_in_flight -= 1
        record = run.record
        watermark = self.event_time.finished(record.partition, record.timestamp)
        if watermark is not None:
            self._child(self.metrics.watermark_ms, str(record.partition)).set(watermark)

    async def _process_input(self, run: _KeyRun) -> None:
        record = run.record
        event = InputEvent(
            input=record.value,
            id=record.id or f"{run.key}:{run.seq}",
            source_timestamp=record.timestamp,
        )
        await self._process_event(run, event, None)
        while (run.tasks or run.in_flight) and not run.aborted:
            if run.tasks:
                action, trigger = run.tasks.popleft()
                await self._run_task(run, action, trigger)
            else:
                run.wake.clear()
                await run.wake.wait()

    async def _process_event(self, run: _KeyRun, event: Event, sender: str | None) -> None:
        if self._event_logger is not None:
            self._event_logger.append(EventLogRecord(time.time(), run.key, run.seq, event, sender))
        self._tally[(self.metrics.events_processed, type(event).type_name())] += 1
        if isinstance(event, OutputEvent):
            watermark = self.event_time.watermark(run.record.partition)
            await self._output.emit(run.key, event, run.record, watermark)
            self._tally[(self.metrics.outputs_emitted, None)] += 1
            return
        for action in self.agent.actions_for(type(event)):
            run.tasks.append((action, event))

    async def _route(self, run: _KeyRun, event: Event, sender: str) -> None:
        if self._router is None or isinstance(event, OutputEvent):
            await self._process_event(run, event, sender)
            return
        assert event.id is not None
        run.in_flight.add(event.id)
        await self._router.route(run.key, run.tag, event, sender, run.record)

    # -- one action step -------------------------------------------------------------

    def _context(
        self,
        run: _KeyRun,
        action: Action,
        event: Event,
        prior: ActionState | None,
        short: MemoryStore,
        sensory: MemoryStore,
        verify: bool = False,
        before_write: Callable[[], None] | None = None,
    ) -> RunnerContextImpl:
        store, key, seq, name, event_id = (
            self.action_states,
            run.key,
            run.seq,
            action.name,
            event.id,
        )
        assert event_id is not None

        def persist_calls(calls: tuple[CallRecord, ...]) -> None:
            store.put(key, seq, name, event_id, ActionState(completed=False, calls=calls))

        def on_replayed_call() -> None:
            self._child(self.metrics.durable_calls_replayed, name).inc()

        return RunnerContextImpl(
            agent=self.agent,
            action=action,
            event=event,
            key=key,
            seq=seq,
            short_term=short,
            sensory=sensory,
            agent_metrics=self._agent_metrics,
            action_metrics=self._action_metrics.get(name)
            or self.metrics.action_group(self.agent.name, name),
            prior=prior,
            persist_calls=persist_calls,
            executor=self._executor,
            verify=verify,
            on_replayed_call=None if verify else on_replayed_call,
            barrier=None if verify else self._barrier,
            before_write=before_write,
        )

    async def _run_task(self, run: _KeyRun, action: Action, event: Event) -> None:
        assert event.id is not None
        state = self.action_states.get(run.key, run.seq, action.name, event.id)
        if state is not None and state.completed:
            outcome = ActionRun(
                replayed=True,
                memory_updates=state.memory_updates,
                events=tuple(unpack_event(e) for e in state.sent_events),
            )
            apply_updates(run.stores, list(outcome.memory_updates))
            self._child(self.metrics.actions_replayed, action.name).inc()
        else:
            # Memory is snapshotted before the action's first write (eagerly when always
            # replaying), so that a failed action's writes can be rolled back.
            snapshot: list[MemoryStore] = []

            def before_write() -> None:
                if not snapshot:
                    snapshot.extend((run.short.copy(), run.sensory.copy()))

            if self._always_replay:
                before_write()
            ctx = self._context(
                run, action, event, state, run.short, run.sensory, before_write=before_write
            )
            started = time.perf_counter()
            try:
                result = action.fn(event, ctx)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if snapshot:
                    run.short.restore(snapshot[0])
                    run.sensory.restore(snapshot[1])
                self._child(self.metrics.action_failures, action.name).inc()
                await self._fail(
                    run, ActionExecutionError(run.key, action.name, event.id, run.seq, exc), event
                )
                return
            finally:
                ctx.close()
                self._child(self.metrics.action_duration_seconds, action.name).observe(
                    time.perf_counter() - started
                )
            state = ActionState(
                completed=True,
                memory_updates=tuple(ctx.updates),
                sent_events=tuple(ctx.packed_events),
                calls=tuple(ctx.calls),
            )
            self.action_states.put(run.key, run.seq, action.name, event.id, state)
            if self._barrier is not None:
                # Durable before its events move on: a completed action never runs again.
                await self._barrier()
            self._tally[(self.metrics.actions_executed, action.name)] += 1
            outcome = ActionRun(False, state.memory_updates, tuple(ctx.events))
            if self._always_replay:
                try:
                    outcome = await self._replay_check(run, action, event, *snapshot)
                except ReplayMismatch as exc:
                    await self._fail(
                        run,
                        NonDeterministicActionError(
                            run.key, action.name, event.id, run.seq, str(exc)
                        ),
                        event,
                    )
                    return
        for sent in outcome.events:
            await self._route(run, sent, action.name)

    async def _fail(self, run: _KeyRun, error: ActionExecutionError, event: Event) -> None:
        if self._on_error is not None:
            await self._on_error(error, event, run.record)
            return
        log.error("%s", error)
        self.failures.append(error)
        run.aborted = True
        run.tasks.clear()
        run.in_flight.clear()

    async def _replay_check(
        self,
        run: _KeyRun,
        action: Action,
        event: Event,
        short_before: MemoryStore,
        sensory_before: MemoryStore,
    ) -> ActionRun:
        """The "always replay" step: drop caches, rebuild from the record, re-run, compare."""
        assert event.id is not None
        recorded = self.action_states.get(run.key, run.seq, action.name, event.id)
        if recorded is None or not recorded.completed:
            raise ReplayMismatch("the action state store lost the record just written")
        events = tuple(unpack_event(e) for e in recorded.sent_events)
        run.short.restore(short_before)
        run.sensory.restore(sensory_before)
        apply_updates(run.stores, list(recorded.memory_updates))

        short, sensory = short_before.copy(), sensory_before.copy()
        ctx = self._context(run, action, event, recorded, short, sensory, verify=True)
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
        return ActionRun(False, recorded.memory_updates, events)
