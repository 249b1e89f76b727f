"""The key loop: one key's inputs, one at a time, inline until a step waits, then a task.

Each step is a plain function that either finishes (returns None) or returns what to await
before the input can go on. An input whose steps never wait is processed inline: no task,
no coroutine of the runtime's own, no trip through the event loop. At its first wait the key
gets a runner task that goes on from that point, the same loop. The Kafka worker and
``LocalRunner`` run this one loop (through :class:`~agentstream.runtime.operator.Operator`).

A concurrency cap is a count of free permits (one per input in progress) and a FIFO of keys
waiting for one (:mod:`agentstream.runtime.limit`). Nothing a key's task raises is left
unretrieved: failures of steps go through the error policy; anything else is fatal for the
key and reported to the host (``on_fatal``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from concurrent.futures import Executor
from typing import Any, Final

from agentstream.api.agent import Agent
from agentstream.api.events import InputEvent
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

__all__ = ["KeyLoop"]

log = logging.getLogger("agentstream.runtime.operator")

DONE: Final = _adopt.DONE
adopt: Final = _adopt.adopt
first_step: Final = _adopt.first_step
# InputEvent(**fields) without pydantic's Python-level __init__ (one is built per input).
_new_input_event: Callable[[dict[str, Any]], InputEvent] = (
    InputEvent.__pydantic_validator__.validate_python
)


class KeyLoop(ActionStep):
    """The key loop over the action step; the operator adds inputs and routed events."""

    def __init__(
        self,
        agent: Agent,
        key_state: KeyStateBackend,
        action_states: ActionStateStore,
        output: OutputSink,
        router: EventRouter | None,
        event_logger: EventLogger | None,
        metrics: RuntimeMetrics,
        on_error: ErrorHandler | None,
        on_fatal: FatalHandler | None,
        always_replay: bool,
        max_concurrency: int | None,
        executor: Executor | None,
        barrier: Callable[[], Awaitable[None]] | None,
        prune_finished: bool,
        action_timeout_s: float | None,
        max_events_per_input: int,
        strict: bool,
    ):
        event_time = EventTimeTracker()
        self._runners: dict[Hashable, asyncio.Task[None]] = {}
        super().__init__(
            agent,
            action_states,
            output,
            router,
            event_logger,
            metrics,
            RuntimeCounts(metrics, event_time, self._runners),
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
        self._runs: dict[Hashable, KeyRun] = {}  # the key's input in progress (holds a permit)
        self._finished: list[tuple[Hashable, int]] = []
        self.inputs_in_flight = 0  # accepted (running, queued or pending) and not finished
        self.partition_inputs: dict[Any, int] = {}  # inputs_in_flight by input partition
        self._attempts = 0  # runs started (an input's attempt number tags its routed events)

    def _in_flight(self, record: InputRecord, delta: int) -> None:
        """Count ``record`` into (1) or out of (-1) the inputs in flight, by partition too."""
        self.inputs_in_flight += delta
        counts = self.partition_inputs
        counts[record.partition] = counts.get(record.partition, 0) + delta

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
        record = run.record
        self._in_flight(record, -1)
        if record.timestamp is not None:
            self.event_time.finished(record.partition, record.timestamp)
        del self._runs[slot]
        self._limit.release(self._run_waiting)
        return rec
