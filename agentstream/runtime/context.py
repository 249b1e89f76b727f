"""The :class:`RunnerContext` implementation and durable execution.

Durable calls are numbered in call order. Each record holds the function id, a digest of
the arguments and the outcome. On replay (``prior`` holds the calls recorded by an
earlier attempt of this action run)::

    position i, same fn id and digest, outcome recorded  -> return it / raise it again
    position i, same fn id and digest, only "started"    -> reconciler decides, else run
    anything else (first mismatch)                        -> forget the rest, run for real

In verification mode (the "always replay" harness) a call that is not served from the
record is non-determinism and raises instead of running.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import pickle
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

from agentstream.api.agent import Action, Agent
from agentstream.api.context import MemoryObject, Reconciler, RunnerContext
from agentstream.api.events import Event, InputEvent, derive_event_id
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ContextThreadError, DurableExecutionError, SerializationError
from agentstream.runtime.action_state import ActionState, CallRecord
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, StoreMemoryObject
from agentstream.serde import dumps, pack_event

__all__ = ["ReplayMismatch", "RunnerContextImpl", "fn_id"]

T = TypeVar("T")


class ReplayMismatch(Exception):
    """Verification found an action doing something else on replay (internal)."""


def fn_id(fn: Callable[..., Any]) -> str:
    """A stable identity of a function across processes: ``module.qualname``."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"


def _digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    try:
        data = dumps([list(args), kwargs], what="durable call arguments")
    except SerializationError:
        data = repr((args, sorted(kwargs.items()))).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class RunnerContextImpl(RunnerContext):
    """The context of one action run; dead once the run is over."""

    def __init__(
        self,
        *,
        agent: Agent,
        action: Action,
        event: Event,
        key: Any,
        seq: int,
        short_term: MemoryStore,
        sensory: MemoryStore,
        agent_metrics: MetricGroup,
        action_metrics: MetricGroup,
        prior: ActionState | None,
        persist_calls: Callable[[tuple[CallRecord, ...]], None],
        executor: Executor | None = None,
        verify: bool = False,
        on_replayed_call: Callable[[], None] | None = None,
        barrier: Callable[[], Awaitable[None]] | None = None,
        before_write: Callable[[], None] | None = None,
    ):
        self._agent = agent
        self._action = action
        self._event = event
        self._key = key
        self._seq = seq
        self._stores = {"short": short_term, "sensory": sensory}
        self._agent_metrics = agent_metrics
        self._action_metrics = action_metrics
        self._prior_calls: tuple[CallRecord, ...] = prior.calls if prior else ()
        self._replaying = bool(self._prior_calls)
        self._persist_calls = persist_calls
        self._executor = executor
        self._verify = verify
        self._on_replayed_call = on_replayed_call
        self._barrier = barrier
        self._thread = threading.get_ident()
        self._closed = False
        self.updates: list[MemoryUpdate] = []
        self.events: list[Event] = []
        self.packed_events: list[bytes] = []
        self.calls: list[CallRecord] = []
        self._before_write = before_write
        self._memory: dict[str, StoreMemoryObject] = {}

    # -- guards -----------------------------------------------------------------

    def _check(self) -> None:
        if threading.get_ident() != self._thread:
            raise ContextThreadError(
                "RunnerContext used from another thread; it belongs to the event loop's "
                "thread. Return values from the thread-pool function and use them in the action."
            )
        if self._closed:
            raise RuntimeError(
                f"the context of action {self._action.name!r} was used after the action finished"
            )

    def close(self) -> None:
        self._closed = True

    # -- RunnerContext ----------------------------------------------------------

    @property
    def key(self) -> Any:
        return self._key

    @property
    def seq(self) -> int:
        return self._seq

    def send_event(self, event: Event) -> None:
        self._check()
        if not isinstance(event, Event):
            raise TypeError(f"send_event takes an Event, got {type(event).__name__}")
        if isinstance(event, InputEvent):
            raise TypeError("actions cannot send InputEvent; define an event type instead")
        identity = {
            "id": derive_event_id(str(self._event.id), self._action.name, len(self.events)),
            "parent_id": self._event.id,
            "source_timestamp": self._event.source_timestamp,
        }
        if event.id is None and all(e is not event for e in self.events):
            sent = event  # a fresh event: stamp it in place (cheaper than a copy)
            sent.__dict__.update(identity)
        else:
            sent = event.model_copy(update=identity)
        packed = pack_event(sent)  # raises SerializationError on the spot
        self.events.append(sent)
        self.packed_events.append(packed)

    @property
    def short_term_memory(self) -> MemoryObject:
        self._check()
        return self._memory_object("short")

    @property
    def sensory_memory(self) -> MemoryObject:
        self._check()
        return self._memory_object("sensory")

    def _memory_object(self, scope: str) -> StoreMemoryObject:
        found = self._memory.get(scope)
        if found is None:
            found = self._memory[scope] = StoreMemoryObject(
                self._stores[scope], "", self.updates.append, self._check, self._before_write
            )
        return found

    def get_resource(self, name: str) -> Any:
        self._check()
        return self._agent.get_resource(name)

    @property
    def action_config(self) -> Mapping[str, Any]:
        return self._action.config

    @property
    def agent_metric_group(self) -> MetricGroup:
        return self._agent_metrics

    @property
    def action_metric_group(self) -> MetricGroup:
        return self._action_metrics

    # -- durable execution ------------------------------------------------------

    def _lookup(self, fid: str, digest: str) -> CallRecord | None:
        """The recorded call at the next position, if it matches; else stop replaying."""
        position = len(self.calls)
        if self._replaying and position < len(self._prior_calls):
            record = self._prior_calls[position]
            if record.fn_id == fid and record.digest == digest:
                return record
        if self._verify:
            raise ReplayMismatch(
                f"action {self._action.name!r} made durable call #{position} to {fid} with "
                "arguments that do not match its record on replay"
            )
        self._replaying = False
        return None

    def _record(self, record: CallRecord, *, replace_last: bool = False) -> None:
        if replace_last:
            self.calls[-1] = record
        else:
            self.calls.append(record)
        if not self._verify:
            self._persist_calls(tuple(self.calls))

    def _replay(self, record: CallRecord) -> Any:
        self.calls.append(record)
        if self._on_replayed_call is not None:
            self._on_replayed_call()
        if record.status == "ok":
            return pickle.loads(record.result or b"")
        raise DurableExecutionError(record.error_type or "Exception", record.error_message or "")

    def _outcome(self, fid: str, digest: str, result: Any) -> CallRecord:
        try:
            blob = pickle.dumps(result)
        except Exception as exc:
            raise SerializationError(
                f"the result of durable call {fid} cannot be recorded (pickle failed: {exc}); "
                "return plain data from durable functions"
            ) from exc
        return CallRecord(fid, digest, "ok", result=blob)

    @staticmethod
    def _failure(fid: str, digest: str, exc: BaseException) -> CallRecord:
        kind = type(exc)
        return CallRecord(
            fid,
            digest,
            "error",
            error_type=f"{kind.__module__}.{kind.__qualname__}",
            error_message=str(exc),
        )

    def _begin(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Reconciler | None,
    ) -> tuple[str, str, CallRecord | None, bool]:
        """Look the call up; returns (fn id, digest, record to replay, reconcile?)."""
        self._check()
        fid, digest = fn_id(fn), _digest(args, kwargs)
        record = self._lookup(fid, digest)
        if record is not None and record.status != "started":
            return fid, digest, record, False
        reconcile = record is not None and reconciler is not None
        if reconciler is not None:
            # Mark the call as started so that a crash mid-call is reconciled next time.
            self._record(CallRecord(fid, digest, "started"))
        return fid, digest, None, reconcile

    def _finish(
        self,
        fid: str,
        digest: str,
        started: bool,
        result: Any = None,
        exc: BaseException | None = None,
    ) -> None:
        record = self._failure(fid, digest, exc) if exc else self._outcome(fid, digest, result)
        self._record(record, replace_last=started)

    def durable_execute(
        self, fn: Callable[..., T], *args: Any, reconciler: Reconciler | None = None, **kwargs: Any
    ) -> T:
        fid, digest, record, reconcile = self._begin(fn, args, kwargs, reconciler)
        if record is not None:
            return self._replay(record)
        target = reconciler if reconcile and reconciler is not None else fn
        try:
            result = target(*args, **kwargs)
        except Exception as exc:
            self._finish(fid, digest, reconciler is not None, exc=exc)
            raise
        self._finish(fid, digest, reconciler is not None, result=result)
        return result

    async def durable_execute_async(
        self,
        fn: Callable[..., T] | Callable[..., Awaitable[T]],
        *args: Any,
        reconciler: Reconciler | None = None,
        **kwargs: Any,
    ) -> T:
        fid, digest, record, reconcile = self._begin(fn, args, kwargs, reconciler)
        if record is not None:
            return self._replay(record)
        target: Callable[..., Any] = reconciler if reconcile and reconciler is not None else fn
        try:
            if inspect.iscoroutinefunction(target):
                result = await target(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, functools.partial(target, *args, **kwargs)
                )
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            self._finish(fid, digest, reconciler is not None, exc=exc)
            if self._barrier is not None:
                await self._barrier()
            raise
        self._finish(fid, digest, reconciler is not None, result=result)
        if self._barrier is not None:
            # The outcome is durable before the action goes on: a crash from here on
            # never repeats this call.
            await self._barrier()
        return result
