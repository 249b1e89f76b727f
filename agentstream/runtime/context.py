"""The :class:`RunnerContext` implementation: events, memory, resources and metrics.

Durable execution (the calls' records, replay and verification) is in
:mod:`agentstream.runtime.durable`, the context's base class.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any, Final, Protocol, TypeVar

from agentstream.api.agent import Action, Agent
from agentstream.api.context import MemoryObject
from agentstream.api.events import Event, InputEvent, derive_event_id
from agentstream.api.metrics import MetricGroup
from agentstream.errors import ContextThreadError
from agentstream.runtime.action_state import ActionState, CallRecord
from agentstream.runtime.durable import DurableCalls, ReplayMismatch, _AsyncCall, fn_id
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, StoreMemoryObject
from agentstream.serde import pack_event

__all__ = ["ContextHost", "Memories", "ReplayMismatch", "RunnerContextImpl", "fn_id"]

T = TypeVar("T")

log = logging.getLogger(__name__)

# Final: the compiled build keeps these in C variables (a plain global is a dict lookup).
_get_ident: Final = threading.get_ident
_clock: Final = time.perf_counter
# Event classes that passed send_event's type checks (they depend on the class only).
_SENDABLE: Final[set[type]] = set()


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


class RunnerContextImpl(DurableCalls):
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
