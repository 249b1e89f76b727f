"""The in-process runner: agents without Kafka, for unit tests, notebooks and comparisons.

(Compiled with mypyc in wheels; :mod:`agentstream.testing` re-exports it.)

    runner = LocalRunner(Greeter())
    runner.run([("k1", "ann"), ("k2", "bob")])  # -> [("k1", "hello ann"), ("k2", ...)]

Inputs are ``(key, value)`` pairs or :class:`InputRecord` with an explicit id and
timestamp. Pairs get ids from their position across the runner's life (``input-0``,
``input-1``...), so a new runner fed the same inputs with the same action state store
replays: completed actions are skipped and their recorded effects re-applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any, Literal

from mypy_extensions import mypyc_attr

from agentstream.api.agent import Agent
from agentstream.api.events import InputEvent, OutputEvent
from agentstream.errors import ActionExecutionError, ConfigurationError
from agentstream.observability.eventlog import EventLogger
from agentstream.observability.metrics import RuntimeMetrics
from agentstream.runtime.action_state import ActionStateStore, InMemoryActionStateStore
from agentstream.runtime.inspection import describe_key
from agentstream.runtime.memory import memory_tree
from agentstream.runtime.operator import DEFAULT_MAX_EVENTS_PER_INPUT, ErrorHandler, Operator
from agentstream.runtime.records import (
    InMemoryKeyState,
    InputRecord,
    KeyStateBackend,
    new_input_record,
)
from agentstream.testing._replay_default import always_replay_default

__all__ = ["InMemoryActionStateStore", "InMemoryKeyState", "InputRecord", "LocalRunner"]


class _Collect:
    """The runner's output sink (it never waits, so outputs are collected inline).

    A plain ``OutputEvent`` is kept as its identity fields only, a tuple of strings and
    numbers that the cycle collector stops scanning after one pass (a retained event is
    several tracked objects, and scanning 50,000 of them again and again cost a fifth of
    the in-process runtime); :meth:`event` rebuilds it around the very output object.
    Subclasses and events with extra attributes are kept as they are.
    """

    def __init__(self) -> None:
        self.outputs: list[tuple[Any, Any]] = []
        self.events: list[OutputEvent | tuple[str | None, str | None, int | None]] = []

    def emit(
        self, key: Any, event: OutputEvent, record: InputRecord, watermark: int | None
    ) -> None:
        fields = event.__dict__  # the declared fields (cheaper than an attribute each)
        self.outputs.append((key, fields["output"]))
        if type(event) is OutputEvent and not event.__pydantic_extra__:
            self.events.append((fields["id"], fields["parent_id"], fields["source_timestamp"]))
        else:
            self.events.append(event)

    def event(self, index: int) -> OutputEvent:
        kept = self.events[index]
        if isinstance(kept, OutputEvent):
            return kept
        ident, parent_id, source_timestamp = kept
        return OutputEvent.model_construct(
            {"output"},
            output=self.outputs[index][1],
            id=ident,
            parent_id=parent_id,
            source_timestamp=source_timestamp,
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class LocalRunner:
    """Runs an agent in-process over in-memory state.

    Args:
        agent: the agent to run.
        action_state_store: where action state is recorded (a fresh in-memory one if None);
            pass the same store to a new runner to replay.
        event_logger: receives one record per processed event.
        metrics: runtime metrics (a fresh registry if None).
        always_replay: after every action, rebuild from the recorded state and re-run the
            action to check it is deterministic (None: the process-wide default, off unless
            a test suite turns it on, see :mod:`agentstream.testing._replay_default`).
        error_policy: "raise" (default: other keys finish, then the first
            :class:`ActionExecutionError` is raised), "collect" (errors are kept in
            :attr:`errors`), or an async callable ``(error, event, record)``.
        max_concurrency: how many keys may be processed at once (None: unlimited).
        key_state: per-key bookkeeping backend (in-memory if None).
        executor: thread pool for blocking functions given to ``durable_execute_async``.
        auto_prune: drop action state as soon as an input finishes (the default keeps it
            until :meth:`prune`, so that re-running replays).
        action_timeout_s: default timeout of an action once it first waits (None: none).
        max_events_per_input: how many events an input's actions may send before the
            input fails with :class:`~agentstream.errors.EventLimitError`.
        strict: for tests: an event that no action listens to (and is not an
            ``OutputEvent``) fails its input with
            :class:`~agentstream.errors.UnhandledEventError` instead of being dropped with
            a warning; an agent with no action for ``InputEvent`` is refused at once.

    The runner drives the operator through the same key loop as the Kafka worker (inline
    until a step waits, then a task per key; ``max_concurrency`` as free slots and a FIFO
    of waiting keys). Keys are not scoped to partitions in-process.
    """

    def __init__(
        self,
        agent: Agent,
        action_state_store: ActionStateStore | None = None,
        event_logger: EventLogger | None = None,
        *,
        metrics: RuntimeMetrics | None = None,
        always_replay: bool | None = None,
        error_policy: Literal["raise", "collect"] | ErrorHandler = "raise",
        max_concurrency: int | None = None,
        key_state: KeyStateBackend | None = None,
        executor: Executor | None = None,
        auto_prune: bool = False,
        action_timeout_s: float | None = None,
        max_events_per_input: int = DEFAULT_MAX_EVENTS_PER_INPUT,
        strict: bool = False,
    ):
        if not isinstance(agent, Agent):
            raise ConfigurationError(f"LocalRunner takes an Agent instance, got {agent!r}")
        if strict and not agent.actions_for(InputEvent):
            raise ConfigurationError(
                f"agent {agent.name!r} has no action for InputEvent: its inputs would do "
                "nothing. Declare one with @action(InputEvent)"
            )
        self.agent = agent
        self.action_state_store: ActionStateStore = (
            action_state_store if action_state_store is not None else InMemoryActionStateStore()
        )
        self.key_state: KeyStateBackend = key_state if key_state is not None else InMemoryKeyState()
        self.event_logger = event_logger
        self.metrics = metrics or RuntimeMetrics()
        self.errors: list[ActionExecutionError] = []
        self._policy = error_policy
        self._always_replay = always_replay_default() if always_replay is None else always_replay
        self._max_concurrency = max_concurrency
        self._executor = executor
        self._auto_prune = auto_prune
        self._action_timeout_s = action_timeout_s
        self._max_events_per_input = max_events_per_input
        self._strict = strict
        self._inputs = 0  # pairs given ids so far (the next id is input-<this>)
        self._operator: Operator | None = None
        self._sink = _Collect()

    @property
    def operator(self) -> Operator:
        """The operator (created on first run, on the running loop)."""
        if self._operator is None:
            on_error = self._policy if callable(self._policy) else None
            self._operator = Operator(
                self.agent,
                key_state=self.key_state,
                action_states=self.action_state_store,
                output=self._sink,
                event_logger=self.event_logger,
                metrics=self.metrics,
                on_error=on_error,
                always_replay=self._always_replay,
                max_concurrency=self._max_concurrency,
                executor=self._executor,
                prune_finished=self._auto_prune,
                action_timeout_s=self._action_timeout_s,
                max_events_per_input=self._max_events_per_input,
                strict=self._strict,
            )
        return self._operator

    def _next_id(self) -> str:
        number = self._inputs
        self._inputs = number + 1
        return f"input-{number}"

    def _record(self, item: Any) -> InputRecord:
        if type(item) is tuple and len(item) == 2:
            return new_input_record(item[0], item[1], self._next_id())
        if isinstance(item, InputRecord):
            if item.id is None:
                return InputRecord(
                    item.key,
                    item.value,
                    self._next_id(),
                    item.timestamp,
                    item.partition,
                    item.offset,
                )
            return item
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(
                f"inputs are (key, value) pairs or InputRecord objects, got {item!r}"
            ) from None
        return InputRecord(key, value, self._next_id())

    async def run_async(self, inputs: Iterable[Any]) -> list[tuple[Any, Any]]:
        """Process ``inputs`` to completion; returns (key, output) pairs in emission order."""
        operator = self.operator
        start = len(self._sink.outputs)
        failures = len(operator.failures)
        fatal = len(operator.fatal)
        for item in inputs:
            operator.on_input(self._record(item))
        await operator.drain()
        if len(operator.fatal) > fatal:
            raise operator.fatal[fatal]
        new_errors = operator.failures[failures:]
        self.errors.extend(new_errors)
        if new_errors and self._policy == "raise":
            raise new_errors[0]
        return self._sink.outputs[start:]

    def run(self, inputs: Iterable[Any]) -> list[tuple[Any, Any]]:
        """Synchronous :meth:`run_async` (not from inside a running event loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("LocalRunner.run() inside an event loop: await run_async()")
        return asyncio.run(self.run_async(inputs))

    def prune(self) -> None:
        """Drop the action state of every finished input (what the service does on commit)."""
        self.operator.prune()

    def memory(self, key: Any) -> dict[str, Any]:
        """The key's short-term memory as nested dicts (``{"stats": {"count": 2}}``), as
        of now: mid-input it includes the current input's writes so far. ``{}`` for a key
        never seen. A copy: changing it changes nothing."""
        run = self.operator.run_of(key)
        if run is not None:
            return memory_tree(run.short)
        return memory_tree(self.key_state.memory(key))

    def pending(self, key: Any) -> list[Any]:
        """The values of the key's inputs waiting behind its current one, in order."""
        record = self.key_state.get(key)
        return [] if record is None else [r.value for r in record.pending]

    def inspect(self, key: Any) -> dict[str, Any] | None:
        """Everything the runner holds for ``key`` (what the worker's ``GET /keys/{key}``
        shows): seq, current and pending inputs, queued actions, recorded action runs of
        the current input, short-term memory. None for a key never seen."""
        return describe_key(self.operator, key)

    @property
    def outputs(self) -> list[tuple[Any, Any]]:
        """Every (key, output) emitted so far."""
        return list(self._sink.outputs)

    @property
    def output_events(self) -> list[OutputEvent]:
        """Every OutputEvent emitted so far (with ids and source timestamps)."""
        sink = self._sink
        return [sink.event(index) for index in range(len(sink.events))]
