"""The :class:`RunnerContext` implementation and durable execution.

Durable calls are numbered in call order. Each record holds the function id, a digest of
the arguments and the outcome: the result as plain data (:mod:`agentstream.runtime.results`:
never pickled, a value that cannot be recorded fails at the call) or the exception as (type
name, message). On replay (``prior`` holds the calls recorded by an earlier attempt of this
action run)::

    position i, same fn id and digest, outcome recorded  -> return it / raise it again
    position i, same fn id and digest, only "started"    -> reconciler decides, else run
    anything else (first mismatch, or a result that      -> forget the rest, run for real
    cannot be read back)

In verification mode (the "always replay" harness) a call that is not served from the
record is non-determinism and raises instead of running.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any, Final, Protocol, TypeVar

from agentstream.api.agent import Action, Agent
from agentstream.api.context import MemoryObject, Reconciler, RunnerContext
from agentstream.api.events import Event, InputEvent, derive_event_id
from agentstream.api.ids import qualified_name
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ContextThreadError, DurableExecutionError, SerializationError
from agentstream.runtime.action_state import ActionState, CallRecord
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, StoreMemoryObject
from agentstream.runtime.results import UnreadableResult, decode_result, encode_result
from agentstream.serde import dumps, pack_event

__all__ = ["ContextHost", "Memories", "ReplayMismatch", "RunnerContextImpl", "fn_id"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# Final: the compiled build keeps these in C variables (a plain global is a dict lookup).
_get_ident: Final = threading.get_ident
_clock: Final = time.perf_counter
# Event classes that passed send_event's type checks (they depend on the class only).
_SENDABLE: Final[set[type]] = set()


class ReplayMismatch(Exception):
    """Verification found an action doing something else on replay (internal)."""


def fn_id(fn: Callable[..., Any]) -> str:
    """A stable identity of a function across processes: ``module.qualname``."""
    return qualified_name(fn.func if isinstance(fn, functools.partial) else fn)


def _digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    try:
        data = dumps([list(args), kwargs], what="durable call arguments")
    except SerializationError:
        data = repr((args, sorted(kwargs.items()))).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _AsyncCall:
    """A ``durable_execute_async`` call of an action run: done once it ran to its end.

    Tracked by a flag, not by the coroutine's state: a compiled coroutine has no
    ``cr_frame`` to look at.
    """

    __slots__ = ("coro", "done", "fn")

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.done = False
        self.coro: Coroutine[Any, Any, Any] | None = None


class ContextHost(Protocol):
    """What a context needs from the operator that created it."""

    agent: Agent

    def executor_for_calls(self) -> Executor | None: ...

    def barrier_for_calls(self) -> Callable[[], Awaitable[None]] | None: ...

    def persist_calls(self, ctx: RunnerContextImpl) -> None: ...

    def replayed_call(self, ctx: RunnerContextImpl) -> None: ...

    def logged_call(
        self, ctx: RunnerContextImpl, record: CallRecord, position: int, latency_s: float | None
    ) -> None: ...

    def metric_groups(self, action: str) -> tuple[MetricGroup, MetricGroup]: ...


class Memories(Protocol):
    """The memory stores an action works on (the key's, or a verification copy)."""

    key: Any  # the record's key
    short: MemoryStore

    @property
    def sensory(self) -> MemoryStore: ...


class RunnerContextImpl(RunnerContext):
    """The context of one action run; dead once the run is over.

    One is built per action run, so it keeps references and builds everything else
    (memory views, call lists) only when the action asks for it.
    """

    __slots__ = (
        "_action",
        "_closed",
        "_event",
        "_host",
        "_key",
        "_memories",
        "_owner",
        "_prior_calls",
        "_sensory",
        "_seq",
        "_short",
        "_verify",
        "async_calls",
        "calls",
        "events",
        "packed_events",
        "updates",
    )

    def __init__(
        self,
        host: ContextHost,
        action: Action,
        event: Event,
        key: Any,
        seq: int,
        memories: Memories,
        prior: ActionState | None,
        verify: bool = False,
    ):
        self._host = host
        self._action = action
        self._event = event
        self._key = key
        self._seq = seq
        self._memories = memories
        # The calls an earlier attempt recorded, served in order until the first mismatch.
        self._prior_calls: tuple[CallRecord, ...] = prior.calls if prior else ()
        self._verify = verify
        self._owner = _get_ident()  # the thread it belongs to
        self._closed = False
        # durable_execute_async calls made (checked for being awaited when the action ends)
        self.async_calls: list[_AsyncCall] | None = None
        self.updates: list[MemoryUpdate] = []
        self.events: list[Event] = []
        self.packed_events: list[bytes] = []
        self.calls: list[CallRecord] = []
        self._short: StoreMemoryObject | None = None
        self._sensory: StoreMemoryObject | None = None

    @property
    def key(self) -> Any:
        """The record's key."""
        return self._memories.key

    @property
    def slot(self) -> Any:
        """The key's identity in state (the service scopes it to a partition)."""
        return self._key

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def action(self) -> Action:
        return self._action

    @property
    def event(self) -> Event:
        """The event the action runs on."""
        return self._event

    @property
    def action_name(self) -> str:
        return self._action.name

    @property
    def event_id(self) -> str:
        return str(self._event.id)

    # -- guards -----------------------------------------------------------------

    def _check(self) -> None:
        if _get_ident() != self._owner:
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
        if self.async_calls:
            for call in self.async_calls:
                if not call.done and call.coro is not None:
                    call.coro.close()  # un-awaited: it never runs (and warns of nothing)
        # The memory views point back at this context (its guard): drop them so the
        # context is freed by reference counting, not left to the cycle collector.
        self._short = self._sensory = None

    # -- RunnerContext ----------------------------------------------------------

    def send_event(self, event: Event) -> None:
        self._check()
        if type(event) not in _SENDABLE:
            if not isinstance(event, Event):
                raise TypeError(f"send_event takes an Event, got {type(event).__name__}")
            if isinstance(event, InputEvent):
                raise TypeError("actions cannot send InputEvent; define an event type instead")
            _SENDABLE.add(type(event))
        # An event's declared fields live in its __dict__ (read there: cheaper than pydantic
        # attribute access).
        parent = self._event.__dict__
        parent_id = parent["id"]
        sent_id = derive_event_id(str(parent_id), self._action.name, len(self.events))
        fields = event.__dict__
        if fields["id"] is None and (not self.events or all(e is not event for e in self.events)):
            sent = event  # a fresh event: stamp it in place (cheaper than a copy)
            fields["id"] = sent_id
            fields["parent_id"] = parent_id
            fields["source_timestamp"] = parent["source_timestamp"]
        else:
            sent = event.model_copy(
                update={
                    "id": sent_id,
                    "parent_id": parent_id,
                    "source_timestamp": parent["source_timestamp"],
                }
            )
        packed = pack_event(sent)  # raises SerializationError on the spot
        self.events.append(sent)
        self.packed_events.append(packed)

    # The views check the context on every use; so the property checks only when it makes
    # one (a closed context has dropped its views).

    @property
    def short_term_memory(self) -> MemoryObject:
        view = self._short
        if view is None:
            view = self._short = self._view(self._memories.short)
        return view

    @property
    def sensory_memory(self) -> MemoryObject:
        view = self._sensory
        if view is None:
            view = self._sensory = self._view(self._memories.sensory)
        return view

    def _view(self, store: MemoryStore) -> StoreMemoryObject:
        self._check()
        return StoreMemoryObject(store, "", self.updates.append, self._check)

    def get_resource(self, name: str) -> Any:
        self._check()
        return self._host.agent.get_resource(name)

    @property
    def action_config(self) -> Mapping[str, Any]:
        return self._action.config

    @property
    def agent_metric_group(self) -> MetricGroup:
        return self._host.metric_groups(self._action.name)[0]

    @property
    def action_metric_group(self) -> MetricGroup:
        return self._host.metric_groups(self._action.name)[1]

    # -- durable execution ------------------------------------------------------

    def _lookup(self, fid: str, digest: str) -> CallRecord | None:
        """The recorded call at the next position, if it matches; else stop replaying."""
        position = len(self.calls)
        if position < len(self._prior_calls):
            record = self._prior_calls[position]
            if record.fn_id == fid and record.digest == digest:
                return record
        self._mismatch(
            f"action {self._action.name!r} made durable call #{position} to {fid} with "
            "arguments that do not match its record on replay"
        )
        return None

    def _mismatch(self, detail: str) -> None:
        if self._verify:
            raise ReplayMismatch(detail)
        self._prior_calls = ()  # stop replaying: the rest runs for real

    def _record(self, record: CallRecord, *, replace_last: bool = False) -> None:
        if replace_last:
            self.calls[-1] = record
        else:
            self.calls.append(record)
        if not self._verify:
            self._host.persist_calls(self)

    def _replay(self, fn: Callable[..., Any], record: CallRecord) -> tuple[Any] | None:
        """The recorded outcome, as a 1-tuple of the result (a recorded error is raised);
        None when the result cannot be read back, and then the call runs again."""
        if record.status != "ok":
            self._served(record)
            raise DurableExecutionError(
                record.error_type or "Exception", record.error_message or ""
            )
        try:
            value = decode_result(fn, record.result or b"")
        except UnreadableResult as exc:
            detail = (
                f"the recorded result of durable call #{len(self.calls)} to {record.fn_id} "
                f"in action {self._action.name!r} cannot be read back ({exc}); it runs again"
            )
            self._mismatch(detail)
            log.warning("%s", detail)
            return None
        self._served(record)
        return (value,)

    def _served(self, record: CallRecord) -> None:
        self.calls.append(record)
        if not self._verify:
            self._host.replayed_call(self)
            self._host.logged_call(self, record, len(self.calls) - 1, None)

    @staticmethod
    def _outcome(fn: Callable[..., Any], fid: str, digest: str, result: Any) -> CallRecord:
        return CallRecord(fid, digest, "ok", result=encode_result(fn, result))

    @staticmethod
    def _failure(fid: str, digest: str, exc: BaseException) -> CallRecord:
        return CallRecord(
            fid,
            digest,
            "error",
            error_type=qualified_name(type(exc)),
            error_message=str(exc),
        )

    def _begin(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reconciler: Reconciler | None,
    ) -> tuple[str, str, tuple[Any] | None, bool]:
        """Look the call up; returns (fn id, digest, replayed result as a 1-tuple or None,
        reconcile?); a replayed failure is raised."""
        self._check()
        fid, digest = fn_id(fn), _digest(args, kwargs)
        record = self._lookup(fid, digest)
        if record is not None and record.status != "started":
            replayed = self._replay(fn, record)
            if replayed is not None:
                return fid, digest, replayed, False
            record = None
        reconcile = record is not None and reconciler is not None
        if reconciler is not None:
            # Mark the call as started so that a crash mid-call is reconciled next time.
            self._record(CallRecord(fid, digest, "started"))
        return fid, digest, None, reconcile

    def _finish(
        self,
        fn: Callable[..., Any],
        fid: str,
        digest: str,
        started: bool,
        started_at: float,
        result: Any = None,
        exc: BaseException | None = None,
    ) -> None:
        record = self._failure(fid, digest, exc) if exc else self._outcome(fn, fid, digest, result)
        self._record(record, replace_last=started)
        if not self._verify:
            self._host.logged_call(self, record, len(self.calls) - 1, _clock() - started_at)

    def durable_execute(
        self, fn: Callable[..., T], *args: Any, reconciler: Reconciler | None = None, **kwargs: Any
    ) -> T:
        if inspect.iscoroutinefunction(fn):
            raise TypeError(self._use_async(fn))
        fid, digest, replayed, reconcile = self._begin(fn, args, kwargs, reconciler)
        if replayed is not None:
            return replayed[0]
        target = reconciler if reconcile and reconciler is not None else fn
        started_at = _clock()
        try:
            result = target(*args, **kwargs)
        except Exception as exc:
            self._finish(fn, fid, digest, reconciler is not None, started_at, exc=exc)
            raise
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # it never ran: no "never awaited" warning on top
            raise TypeError(self._use_async(fn))
        self._finish(fn, fid, digest, reconciler is not None, started_at, result=result)
        return result

    def _use_async(self, fn: Callable[..., Any]) -> str:
        return (
            f"ctx.durable_execute({fn_id(fn)}) in action {self._action.name!r}: the function "
            "is a coroutine function (or returns an awaitable), which durable_execute cannot "
            "await. Use `await ctx.durable_execute_async(fn, ...)` in an `async def` action"
        )

    def durable_execute_async(
        self,
        fn: Callable[..., Any],
        *args: Any,
        reconciler: Reconciler | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, Any]:
        call = _AsyncCall(fn)
        coro = call.coro = self._durable_async(fn, args, reconciler, kwargs, call)
        if self.async_calls is None:
            self.async_calls = []
        self.async_calls.append(call)
        return coro

    def unawaited_error(self) -> Exception | None:
        """The action returned without awaiting a ``durable_execute_async`` call: the
        error that fails it (None if every call was awaited to its end)."""
        calls = self.async_calls
        if not calls:
            return None
        left = [fn_id(call.fn) for call in calls if not call.done]
        if not left:
            return None
        how = (
            "`result = await ctx.durable_execute_async(...)`"
            if self._action.is_async
            else "`await ctx.durable_execute_async(...)` in an `async def` action, or "
            "`ctx.durable_execute(...)` in a `def` one"
        )
        return RuntimeError(
            f"action {self._action.name!r} returned without awaiting "
            f"ctx.durable_execute_async({', '.join(left)}): the call did not run to its end "
            f"and its result was not recorded. Write {how}"
        )

    async def _durable_async(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        reconciler: Reconciler | None,
        kwargs: dict[str, Any],
        call: _AsyncCall,
    ) -> Any:
        try:
            return await self._async_call(fn, args, reconciler, kwargs)
        finally:
            call.done = True  # ran to its end (or raised): it was awaited

    async def _async_call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        reconciler: Reconciler | None,
        kwargs: dict[str, Any],
    ) -> Any:
        fid, digest, replayed, reconcile = self._begin(fn, args, kwargs, reconciler)
        if replayed is not None:
            return replayed[0]
        target: Callable[..., Any] = reconciler if reconcile and reconciler is not None else fn
        started_at = _clock()
        try:
            if inspect.iscoroutinefunction(target):
                result = await target(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._host.executor_for_calls(), functools.partial(target, *args, **kwargs)
                )
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            self._finish(fn, fid, digest, reconciler is not None, started_at, exc=exc)
            await self._durable()
            raise
        self._finish(fn, fid, digest, reconciler is not None, started_at, result=result)
        # The outcome is durable before the action goes on: a crash from here on never
        # repeats this call.
        await self._durable()
        return result

    async def _durable(self) -> None:
        barrier = None if self._verify else self._host.barrier_for_calls()
        if barrier is not None:
            await barrier()
