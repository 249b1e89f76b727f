"""Durable execution: the calls of an action run, recorded, and served on replay.

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

:class:`DurableCalls` is the base of
:class:`~agentstream.runtime.context.RunnerContextImpl`; it is not compiled (nothing on the
in-process hot path calls it).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from agentstream.api.agent import Action
from agentstream.api.context import Reconciler, RunnerContext
from agentstream.api.ids import qualified_name
from agentstream.errors import DurableExecutionError, SerializationError
from agentstream.runtime.action_state import CallRecord
from agentstream.runtime.results import UnreadableResult, decode_result, encode_result
from agentstream.serde import dumps

if TYPE_CHECKING:
    from agentstream.runtime.context import ContextHost, RunnerContextImpl

__all__ = ["DurableCalls", "ReplayMismatch", "fn_id"]

T = TypeVar("T")

log = logging.getLogger("agentstream.runtime.context")

_clock: Final = time.perf_counter


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


class DurableCalls(RunnerContext):
    """The durable-execution half of a runner context (the context supplies the rest)."""

    __slots__ = ()

    _host: ContextHost
    _action: Action
    _verify: bool
    _prior_calls: tuple[CallRecord, ...]
    calls: list[CallRecord]
    async_calls: list[_AsyncCall] | None

    @property
    def _this(self) -> RunnerContextImpl:
        return cast("RunnerContextImpl", self)

    def _check(self) -> None:
        raise NotImplementedError  # the context's

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
            self._host.persist_calls(self._this)

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
            self._host.replayed_call(self._this)
            self._host.logged_call(self._this, record, len(self.calls) - 1, None)

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
            self._host.logged_call(self._this, record, len(self.calls) - 1, _clock() - started_at)

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
